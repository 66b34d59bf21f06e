"""HorizontalPodAutoscaler and PodDisruptionBudget."""

from __future__ import annotations

from typing import Any

from slm_operator.api.resource import SLMDeployment
from slm_operator.render.meta import object_meta, selector_labels
from slm_runtime.metrics import REQUESTS_INFLIGHT

__all__ = ["DEFAULT_CPU_TARGET", "build_hpa", "build_pdb"]

DEFAULT_CPU_TARGET = 80


def build_hpa(slm: SLMDeployment) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the Deployment, or None when autoscaling is off."""
    scaling = slm.spec.autoscaling
    if not scaling or not scaling.enabled:
        return None
    metrics: list[dict[str, Any]] = []
    if scaling.target_inflight_requests:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": REQUESTS_INFLIGHT},
                    "target": {"type": "AverageValue", "averageValue": str(scaling.target_inflight_requests)},
                },
            }
        )
    cpu = scaling.target_cpu_utilization or (None if metrics else DEFAULT_CPU_TARGET)
    if cpu:
        metrics.append(
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
            }
        )
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(slm),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": slm.metadata.name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": metrics,
        },
    }


def build_pdb(slm: SLMDeployment) -> dict[str, Any] | None:
    """A PodDisruptionBudget allowing one pod down at a time, when more than one pod runs (the HPA's minimum
    when autoscaling)."""
    scaling = slm.spec.autoscaling
    replicas = scaling.min_replicas if scaling and scaling.enabled else slm.spec.replicas
    if replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(slm),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(slm)}},
    }
