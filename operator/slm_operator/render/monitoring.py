"""The Prometheus Operator ServiceMonitor (rendered only where its CRD exists)."""

from __future__ import annotations

from typing import Any

from slm_operator.api.resource import SLMDeployment
from slm_operator.api.spec import MonitoringSpec
from slm_operator.render.meta import object_meta, selector_labels

__all__ = ["build_service_monitor"]


def build_service_monitor(slm: SLMDeployment, *, crd_available: bool) -> dict[str, Any] | None:
    monitoring = slm.spec.monitoring or MonitoringSpec()
    if not (crd_available and monitoring.service_monitor):
        return None
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": object_meta(slm),
        "spec": {
            "selector": {"matchLabels": selector_labels(slm)},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": monitoring.interval}],
        },
    }
