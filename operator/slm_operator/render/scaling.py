"""Who owns the replica count, and the objects that say so: a HorizontalPodAutoscaler (CPU, or the runtime's pods
metric where KEDA is not installed), a KEDA ScaledObject (requests in flight, read from Prometheus; scale to zero
with slm-gateway), and the PodDisruptionBudget.

``scaling_plan`` decides once per render; the builders and the controller's Autoscaling condition both read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from slm_operator.api.gateway import GATEWAY_INFLIGHT, GATEWAY_MODEL_LABEL, model_id
from slm_operator.api.quantity import parse_duration_seconds
from slm_operator.api.resource import SLMDeployment
from slm_operator.api.spec import AutoscalingSpec, MonitoringSpec
from slm_operator.render.meta import common_labels, object_meta, selector_labels
from slm_operator.settings import OperatorSettings
from slm_runtime.metrics import REQUESTS_INFLIGHT

__all__ = [
    "DEFAULT_CPU_TARGET",
    "KEDA_API_VERSION",
    "KEDA_EXCLUDED_LABELS_ANNOTATION",
    "Autoscaler",
    "ScalingPlan",
    "build_hpa",
    "build_pdb",
    "build_scaled_object",
    "gateway_query",
    "inflight_query",
    "keda_hpa_name",
    "scaling_plan",
]

DEFAULT_CPU_TARGET = 80
KEDA_API_VERSION = "keda.sh/v1alpha1"
# KEDA copies a ScaledObject's labels onto the HPA it makes (keda-hpa-<name>); with ours on it, that HPA would look
# like one the operator owns (and be pruned as unwanted). This KEDA annotation lists the labels it must not copy.
KEDA_EXCLUDED_LABELS_ANNOTATION = "scaledobject.keda.sh/hpa-excluded-labels"


class Autoscaler(StrEnum):
    """What owns the Deployment's replica count."""

    NONE = ""  # spec.replicas, written into the Deployment
    HPA = "HorizontalPodAutoscaler"
    KEDA = "ScaledObject"


@dataclass(frozen=True)
class ScalingPlan:
    """How one SLMDeployment scales, and the Autoscaling condition that reports it (none while disabled)."""

    autoscaler: Autoscaler
    min_replicas: int  # what the autoscaler is given: spec.autoscaling.minReplicas, or 1 where zero cannot work
    ok: bool = True
    reason: str = ""
    message: str = ""

    @property
    def condition(self) -> tuple[bool, str, str] | None:
        """(status, reason, message) of the Autoscaling condition; None when autoscaling is off."""
        return None if self.autoscaler is Autoscaler.NONE else (self.ok, self.reason, self.message)


def keda_hpa_name(name: str) -> str:
    """The HPA KEDA makes for a ScaledObject (KEDA's default name)."""
    return f"keda-hpa-{name}"


def _seconds(duration: str) -> int:
    return math.ceil(parse_duration_seconds(duration))


def _namespace(slm: SLMDeployment) -> str:
    return slm.metadata.namespace or "default"


def inflight_query(slm: SLMDeployment) -> str:
    """PromQL for the requests in flight on every pod of the model server (the labels a ServiceMonitor gives)."""
    return f'sum({REQUESTS_INFLIGHT}{{namespace="{_namespace(slm)}",service="{slm.metadata.name}"}})'


def gateway_query(slm: SLMDeployment) -> str:
    """PromQL for the requests slm-gateway answers or holds for this model (held ones wake a model at zero)."""
    return f'sum({GATEWAY_INFLIGHT}{{{GATEWAY_MODEL_LABEL}="{model_id(_namespace(slm), slm.metadata.name)}"}})'


def _cpu_target(scaling: AutoscalingSpec, *, other_metrics: bool) -> int | None:
    return scaling.target_cpu_utilization or (None if other_metrics else DEFAULT_CPU_TARGET)


def _service_monitor(slm: SLMDeployment, crd_available: bool) -> bool:
    return crd_available and (slm.spec.monitoring or MonitoringSpec()).service_monitor


def scaling_plan(
    slm: SLMDeployment,
    settings: OperatorSettings,
    *,
    keda: bool,
    service_monitor_crd: bool = False,
    served_once: bool = True,
) -> ScalingPlan:
    """Who scales ``slm`` given what the cluster serves (``keda``: the ScaledObject kind) and the operator's
    settings (a gateway to wake models at zero, the Prometheus KEDA queries). ``served_once``: whether the model
    has been Ready since it was made; until then a model that may scale to zero keeps one replica, so that its
    first start pulls, verifies and loads it however long that takes."""
    scaling = slm.spec.autoscaling
    if not scaling or not scaling.enabled:
        return ScalingPlan(Autoscaler.NONE, slm.spec.replicas)
    name = slm.metadata.name
    bounds = f"{scaling.min_replicas}-{scaling.max_replicas} replicas"
    if not scaling.inflight:
        cpu = _cpu_target(scaling, other_metrics=False)
        return ScalingPlan(
            Autoscaler.HPA,
            scaling.min_replicas,
            reason="HorizontalPodAutoscaler",
            message=f"HorizontalPodAutoscaler {name}: {bounds} on CPU utilization (target {cpu}%, read from "
            "metrics-server)",
        )
    target = scaling.target_inflight_requests
    if not keda:
        zero = "; minReplicas 0 cannot work without it, so 1 replica stays up" if scaling.min_replicas == 0 else ""
        return ScalingPlan(
            Autoscaler.HPA,
            max(1, scaling.min_replicas),
            ok=False,
            reason="KEDANotInstalled",
            message="spec.autoscaling.targetInflightRequests scales through a KEDA ScaledObject (keda.sh/v1alpha1), "
            "which this cluster does not serve: install KEDA (docs/autoscaling.md), or drop targetInflightRequests "
            f"and scale on CPU only (targetCPUUtilization). Until then HorizontalPodAutoscaler {name} asks for the "
            f"pods metric {REQUESTS_INFLIGHT}, which only a custom-metrics adapter (prometheus-adapter) "
            f"serves{zero}",
        )
    also_cpu = (
        f" and CPU utilization (target {scaling.target_cpu_utilization}%)" if scaling.target_cpu_utilization else ""
    )
    scrape = (
        ""
        if _service_monitor(slm, service_monitor_crd)
        else "; no ServiceMonitor is rendered (spec.monitoring.serviceMonitor is off or the Prometheus Operator is "
        "missing), so Prometheus must scrape the pods with the labels namespace and service itself"
    )
    via = (
        f"KEDA ScaledObject {name} (HPA {keda_hpa_name(name)}) on requests in flight (target {target} per pod, "
        f"from {settings.prometheus_url}){also_cpu}"
    )
    if scaling.min_replicas == 0 and not settings.gateway_service:
        return ScalingPlan(
            Autoscaler.KEDA,
            1,
            ok=False,
            reason="GatewayRequired",
            message="spec.autoscaling.minReplicas: 0 needs slm-gateway, which holds requests while the model wakes, "
            "and this operator has none (its gatewayService setting is empty): enable the gateway in the Helm chart, "
            f"or set minReplicas to 1 or more. Until then 1 replica stays up; {via}{scrape}",
        )
    if scaling.min_replicas == 0 and not served_once:
        return ScalingPlan(
            Autoscaler.KEDA,
            1,
            reason="ScaleToZero",
            message=f"{via}: 1-{scaling.max_replicas} replicas until the model has been Ready once (its first start "
            f"pulls, verifies and loads it), then 0-{scaling.max_replicas}, to zero after "
            f"{scaling.scale_to_zero_after} without a request in flight; slm-gateway ({settings.gateway_service}) "
            f"wakes the model{scrape}",
        )
    if scaling.min_replicas == 0:
        return ScalingPlan(
            Autoscaler.KEDA,
            0,
            reason="ScaleToZero",
            message=f"{via}: 0-{scaling.max_replicas} replicas, to zero after {scaling.scale_to_zero_after} without a "
            f"request in flight; slm-gateway ({settings.gateway_service}) wakes the model{scrape}",
        )
    return ScalingPlan(
        Autoscaler.KEDA, scaling.min_replicas, reason="KEDAScaledObject", message=f"{via}: {bounds}{scrape}"
    )


def _behavior(scaling: AutoscalingSpec) -> dict[str, Any] | None:
    behavior: dict[str, Any] = {}
    if scaling.scale_up_stabilization is not None:
        behavior["scaleUp"] = {"stabilizationWindowSeconds": _seconds(scaling.scale_up_stabilization)}
    if scaling.scale_down_stabilization is not None:
        behavior["scaleDown"] = {"stabilizationWindowSeconds": _seconds(scaling.scale_down_stabilization)}
    return behavior or None


def _scale_target(slm: SLMDeployment) -> dict[str, str]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "name": slm.metadata.name}


def build_hpa(slm: SLMDeployment, plan: ScalingPlan) -> dict[str, Any] | None:
    """An autoscaling/v2 HPA on the Deployment when the plan says so (CPU; the runtime's pods metric where an
    in-flight target is set but KEDA is missing), else None."""
    scaling = slm.spec.autoscaling
    if plan.autoscaler is not Autoscaler.HPA or scaling is None:
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
    cpu = _cpu_target(scaling, other_metrics=bool(metrics))
    if cpu:
        metrics.append(
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": cpu}},
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(slm),
        "minReplicas": plan.min_replicas,
        "maxReplicas": scaling.max_replicas,
        "metrics": metrics,
    }
    behavior = _behavior(scaling)
    if behavior:
        spec["behavior"] = behavior
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": object_meta(slm),
        "spec": spec,
    }


def _prometheus_trigger(
    name: str, query: str, threshold: int, settings: OperatorSettings, **extra: str
) -> dict[str, Any]:
    return {
        "type": "prometheus",
        "name": name,
        "metricType": "AverageValue",
        "metadata": {"serverAddress": settings.prometheus_url, "query": query, "threshold": str(threshold), **extra},
    }


def build_scaled_object(slm: SLMDeployment, settings: OperatorSettings, plan: ScalingPlan) -> dict[str, Any] | None:
    """A KEDA ScaledObject on the Deployment when the plan says so, else None.

    Triggers: the runtime's requests in flight per pod; with minReplicas 0 also slm-gateway's requests for the
    model (a request held at the gateway activates a model at zero); CPU utilization when targeted too. KEDA makes
    and owns the HPA (keda-hpa-<name>); the operator renders none of its own. slm-gateway may set KEDA's
    force-activation annotation on this object under its own field manager: the operator never sets it, so its
    server-side apply leaves it alone.
    """
    scaling = slm.spec.autoscaling
    if plan.autoscaler is not Autoscaler.KEDA or scaling is None or scaling.target_inflight_requests is None:
        return None
    target = scaling.target_inflight_requests
    triggers = [_prometheus_trigger("inflight", inflight_query(slm), target, settings)]
    if plan.min_replicas == 0:
        triggers.append(_prometheus_trigger("gateway", gateway_query(slm), target, settings, activationThreshold="0"))
    if scaling.target_cpu_utilization:
        triggers.append(
            {
                "type": "cpu",
                "name": "cpu",
                "metricType": "Utilization",
                "metadata": {"value": str(scaling.target_cpu_utilization)},
            }
        )
    spec: dict[str, Any] = {
        "scaleTargetRef": _scale_target(slm),
        "minReplicaCount": plan.min_replicas,
        "maxReplicaCount": scaling.max_replicas,
        "pollingInterval": _seconds(scaling.polling_interval),
        "cooldownPeriod": _seconds(scaling.scale_to_zero_after),
    }
    if plan.min_replicas == 0:
        # KEDA scales a target that was never active to zero once this much time has passed since the ScaledObject
        # was made (0 by default: at its first poll). The plan allows zero only once the model has been Ready, and
        # the idle period still counts from the ScaledObject's creation.
        spec["initialCooldownPeriod"] = _seconds(scaling.scale_to_zero_after)
    behavior = _behavior(scaling)
    if behavior:
        spec["advanced"] = {"horizontalPodAutoscalerConfig": {"behavior": behavior}}
    spec["triggers"] = triggers
    excluded = ",".join(sorted(common_labels(slm)))
    return {
        "apiVersion": KEDA_API_VERSION,
        "kind": "ScaledObject",
        "metadata": object_meta(slm, annotations={KEDA_EXCLUDED_LABELS_ANNOTATION: excluded}),
        "spec": spec,
    }


def build_pdb(slm: SLMDeployment, plan: ScalingPlan) -> dict[str, Any] | None:
    """A PodDisruptionBudget allowing one pod down at a time, when more than one pod runs (the autoscaler's
    minimum when autoscaling; never for a model that may scale to zero)."""
    replicas = plan.min_replicas
    if replicas <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": object_meta(slm),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": selector_labels(slm)}},
    }
