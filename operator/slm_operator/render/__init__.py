"""SLMDeployment -> Kubernetes manifests, as pure functions (no I/O), one builder per kind.

``render_all`` is what the controller applies; rendering the same input twice gives byte-identical output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from slm_operator.api.enums import Accelerator
from slm_operator.api.resource import SLMDeployment
from slm_operator.render.deployment import build_deployment
from slm_operator.render.meta import selector_labels
from slm_operator.render.monitoring import build_service_monitor
from slm_operator.render.network import build_network_policy, build_service, endpoint
from slm_operator.render.runtime_env import runtime_environment
from slm_operator.render.scaling import build_hpa, build_pdb
from slm_operator.render.storage import build_cache_claim
from slm_operator.settings import OperatorSettings

__all__ = [
    "OWNED_KINDS",
    "RenderOptions",
    "endpoint",
    "render_all",
    "runtime_environment",
    "selector_labels",
]

# (apiVersion, kind) of everything the operator may create, in apply order.
OWNED_KINDS: tuple[tuple[str, str], ...] = (
    ("v1", "PersistentVolumeClaim"),
    ("v1", "Service"),
    ("apps/v1", "Deployment"),
    ("autoscaling/v2", "HorizontalPodAutoscaler"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)


@dataclass(frozen=True)
class RenderOptions:
    """What the controller knows beyond the spec: the active hardware tier and the cluster's APIs."""

    accelerator: Accelerator
    service_monitor_crd: bool = False


def render_all(slm: SLMDeployment, settings: OperatorSettings, options: RenderOptions) -> list[dict[str, Any]]:
    """Every object the SLMDeployment needs now, in OWNED_KINDS order."""
    profile = settings.profile(options.accelerator)
    candidates = [
        build_cache_claim(slm),
        build_service(slm),
        build_deployment(slm, options.accelerator, profile, settings),
        build_hpa(slm),
        build_pdb(slm),
        build_network_policy(slm),
        build_service_monitor(slm, crd_available=options.service_monitor_crd),
    ]
    return [manifest for manifest in candidates if manifest is not None]
