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
from slm_operator.render.scaling import (
    Autoscaler,
    ScalingPlan,
    build_hpa,
    build_pdb,
    build_scaled_object,
    scaling_plan,
)
from slm_operator.render.storage import build_cache_claim
from slm_operator.settings import OperatorSettings

__all__ = [
    "OWNED_KINDS",
    "RenderOptions",
    "ScalingPlan",
    "endpoint",
    "plan_for",
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
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
)


@dataclass(frozen=True)
class RenderOptions:
    """What the controller knows beyond the spec: the active hardware tier and the cluster's APIs."""

    accelerator: Accelerator
    service_monitor_crd: bool = False
    # Whether the cluster serves KEDA's ScaledObject (keda.sh/v1alpha1).
    keda: bool = False
    # spec.replicas of the live Deployment, when there is one.
    live_replicas: int | None = None
    # Whether the model has been Ready since it was made (its status says Ready, ScaledToZero or Waking): a model
    # that may scale to zero keeps one replica until then.
    served_once: bool = True


def plan_for(slm: SLMDeployment, settings: OperatorSettings, options: RenderOptions) -> ScalingPlan:
    """Who owns the replica count of ``slm`` (render/scaling.py), as render_all decides it."""
    return scaling_plan(
        slm,
        settings,
        keda=options.keda,
        service_monitor_crd=options.service_monitor_crd,
        served_once=options.served_once,
    )


def render_all(slm: SLMDeployment, settings: OperatorSettings, options: RenderOptions) -> list[dict[str, Any]]:
    """Every object the SLMDeployment needs now, in OWNED_KINDS order."""
    profile = settings.profile(options.accelerator)
    plan = plan_for(slm, settings, options)
    deployment = build_deployment(slm, options.accelerator, profile, settings)
    if plan.autoscaler is Autoscaler.HPA and options.live_replicas == 0:
        # An HPA does not act on a target at zero replicas (a model that KEDA scaled to zero before KEDA went
        # away or scale to zero was turned off): bring it back to the HPA's minimum, from which the HPA takes over.
        deployment["spec"] = {"replicas": plan.min_replicas, **deployment["spec"]}
    candidates = [
        build_cache_claim(slm),
        build_service(slm),
        deployment,
        build_hpa(slm, plan),
        build_scaled_object(slm, settings, plan),
        build_pdb(slm, plan),
        build_network_policy(slm, settings),
        build_service_monitor(slm, crd_available=options.service_monitor_crd),
    ]
    return [manifest for manifest in candidates if manifest is not None]
