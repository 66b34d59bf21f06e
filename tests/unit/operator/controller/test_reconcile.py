"""reconcile() through its Applier protocol: what it applies, deletes and reports, with a recording applier."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slm_operator.api import ManifestError
from slm_operator.api.gateway import FORCE_ACTIVATION_ANNOTATION
from slm_operator.controller.reconcile import LiveObjects, reconcile
from slm_operator.render.meta import ACCELERATOR_ANNOTATION
from slm_operator.settings import OperatorSettings

SETTINGS = OperatorSettings()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


@dataclass
class RecordingApplier:
    """An Applier that records every write (the protocol reconcile() writes through)."""

    applied: list[dict[str, Any]] = field(default_factory=list)
    deleted: list[tuple[str, str, str, str]] = field(default_factory=list)
    writes: list[str] = field(default_factory=list)  # "apply Kind" / "delete Kind", in order

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applied.append(manifest)
        self.writes.append(f"apply {manifest['kind']}")

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((api_version, kind, namespace, name))
        self.writes.append(f"delete {kind}")


def body(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": "assistant", "namespace": "team-a", "uid": "u1", "generation": 3},
        "spec": {"model": {"source": "ollama://qwen2.5:0.5b"}, **spec},
    }


def live_from(applier: RecordingApplier, pods: list[dict[str, Any]] | None = None) -> LiveObjects:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for manifest in applier.applied:
        by_kind.setdefault(manifest["kind"], []).append(manifest)
    return LiveObjects(by_kind=by_kind, pods=pods or [])


def test_first_reconcile_applies_every_owned_object_and_reports_pending() -> None:
    applier = RecordingApplier()
    result = reconcile(body(), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW)
    assert sorted(m["kind"] for m in applier.applied) == ["Deployment", "Service"]
    assert sorted(result.applied) == ["Deployment/assistant", "Service/assistant"]
    assert applier.deleted == []
    assert result.status["phase"] == "Pending"
    assert result.status["observedGeneration"] == 3
    assert result.status["endpoint"] == "http://assistant.team-a.svc:11434"


def test_a_second_reconcile_over_what_it_applied_writes_nothing() -> None:
    applier = RecordingApplier()
    reconcile(body(), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW)
    again = RecordingApplier()
    result = reconcile(body(), live_from(applier), again, SETTINGS, service_monitor_crd=False, now=NOW)
    assert again.applied == [] and again.deleted == [] and result.applied == []


def test_objects_no_longer_wanted_are_deleted() -> None:
    applier = RecordingApplier()
    spec = {"replicas": 2, "autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 4}}
    reconcile(body(**spec), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW)
    assert {"HorizontalPodAutoscaler", "PodDisruptionBudget"} <= {m["kind"] for m in applier.applied}

    after = RecordingApplier()
    result = reconcile(body(), live_from(applier), after, SETTINGS, service_monitor_crd=False, now=NOW)
    assert sorted(kind for _, kind, _, _ in after.deleted) == ["HorizontalPodAutoscaler", "PodDisruptionBudget"]
    assert all(namespace == "team-a" and name == "assistant" for _, _, namespace, name in after.deleted)
    assert sorted(result.deleted) == ["HorizontalPodAutoscaler/assistant", "PodDisruptionBudget/assistant"]


def test_a_changed_spec_reapplies_the_deployment_only() -> None:
    applier = RecordingApplier()
    reconcile(body(), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW)
    changed = RecordingApplier()
    reconcile(
        body(parameters={"temperature": 0.1}), live_from(applier), changed, SETTINGS, service_monitor_crd=False, now=NOW
    )
    assert [m["kind"] for m in changed.applied] == ["Deployment"]
    env = {e["name"]: e.get("value") for e in changed.applied[0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["SLM_TEMPERATURE"] == "0.1"


def test_unschedulable_pods_past_fallback_after_move_to_the_next_tier() -> None:
    spec = {"hardware": {"accelerator": "nvidia-gpu", "fallback": ["cpu"], "fallbackAfter": "60s"}}
    applier = RecordingApplier()
    reconcile(body(**spec), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW)
    stuck = {
        "metadata": {"name": "assistant-1", "annotations": {ACCELERATOR_ANNOTATION: "nvidia-gpu"}},
        "status": {
            "phase": "Pending",
            "conditions": [
                {
                    "type": "PodScheduled",
                    "status": "False",
                    "reason": "Unschedulable",
                    "message": "0/3 nodes are available",
                    "lastTransitionTime": (NOW - timedelta(seconds=90)).strftime("%Y-%m-%dT%H:%M:%SZ"),
                }
            ],
        },
    }
    moved = RecordingApplier()
    document = {**body(**spec), "status": {"hardware": {"active": "nvidia-gpu"}}}
    result = reconcile(document, live_from(applier, [stuck]), moved, SETTINGS, service_monitor_crd=False, now=NOW)
    assert result.fell_back_to == "cpu"
    deployment = next(m for m in moved.applied if m["kind"] == "Deployment")
    assert "nvidia.com/gpu.present" not in (deployment["spec"]["template"]["spec"].get("nodeSelector") or {})
    assert result.status["hardware"]["active"] == "cpu"


def test_an_invalid_spec_raises_before_any_write() -> None:
    applier = RecordingApplier()
    with pytest.raises(ManifestError):
        reconcile(
            body(parameters={"topP": 0}), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, now=NOW
        )
    assert applier.applied == [] and applier.deleted == []


GATEWAY = OperatorSettings(gateway_service="slm-system/slm-gateway")
INFLIGHT = {"enabled": True, "minReplicas": 1, "maxReplicas": 4, "targetInflightRequests": 2}
TO_ZERO = {**INFLIGHT, "minReplicas": 0, "scaleToZeroAfter": "30s"}


def autoscaling_condition(result: Any) -> tuple[str, str, str]:
    condition = next(c for c in result.status["conditions"] if c["type"] == "Autoscaling")
    return condition["status"], condition["reason"], condition["message"]


def test_inflight_autoscaling_with_keda_applies_a_scaled_object_and_no_hpa() -> None:
    applier = RecordingApplier()
    result = reconcile(
        body(autoscaling=INFLIGHT), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=True, keda=True, now=NOW
    )
    kinds = [m["kind"] for m in applier.applied]
    assert "ScaledObject" in kinds and "HorizontalPodAutoscaler" not in kinds
    assert kinds.index("Deployment") < kinds.index("ScaledObject")
    assert autoscaling_condition(result)[:2] == ("True", "KEDAScaledObject")


def test_keda_and_the_gateway_writing_on_the_scaled_object_make_no_apply() -> None:
    """KEDA labels the ScaledObject and slm-gateway sets its force-activation annotation (under their own field
    managers): the operator's ScaledObject is still contained in the live one, so nothing is written."""
    applier = RecordingApplier()
    reconcile(body(autoscaling=TO_ZERO), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=True, keda=True)
    live = live_from(applier)
    scaled: dict[str, Any] = next(dict(o) for o in live.by_kind["ScaledObject"])
    live = LiveObjects({**live.by_kind, "ScaledObject": [scaled]}, live.pods)
    scaled["metadata"]["annotations"][FORCE_ACTIVATION_ANNOTATION] = "true"
    scaled["metadata"]["labels"]["scaledobject.keda.sh/name"] = "assistant"
    scaled["status"] = {"hpaName": "keda-hpa-assistant"}
    again = RecordingApplier()
    reconcile(body(autoscaling=TO_ZERO), live, again, GATEWAY, service_monitor_crd=True, keda=True)
    assert again.writes == []


def test_switching_from_cpu_to_inflight_deletes_the_hpa_before_applying_the_scaled_object() -> None:
    """KEDA refuses a ScaledObject for a Deployment that another HPA still targets."""
    applier = RecordingApplier()
    cpu = {"enabled": True, "minReplicas": 1, "maxReplicas": 4}
    reconcile(body(autoscaling=cpu), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=True)
    assert "HorizontalPodAutoscaler" in [m["kind"] for m in applier.applied]
    switched = RecordingApplier()
    result = reconcile(
        body(autoscaling=INFLIGHT), live_from(applier), switched, GATEWAY, service_monitor_crd=False, keda=True
    )
    assert switched.writes == ["delete HorizontalPodAutoscaler", "apply ScaledObject"]
    assert result.deleted == ["HorizontalPodAutoscaler/assistant"]


def test_turning_autoscaling_off_deletes_the_scaled_object() -> None:
    applier = RecordingApplier()
    reconcile(body(autoscaling=INFLIGHT), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=True)
    off = RecordingApplier()
    result = reconcile(body(), live_from(applier), off, GATEWAY, service_monitor_crd=False, keda=True)
    assert [(kind, name) for _, kind, _, name in off.deleted] == [("ScaledObject", "assistant")]
    assert off.deleted[0][0] == "keda.sh/v1alpha1"
    assert "Autoscaling" not in {c["type"] for c in result.status["conditions"]}


def test_keda_s_own_hpa_is_never_pruned_even_with_our_labels() -> None:
    applier = RecordingApplier()
    reconcile(body(autoscaling=INFLIGHT), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=True)
    live = live_from(applier)
    keda_hpa = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {
            "name": "keda-hpa-assistant",
            "labels": dict(live.by_kind["ScaledObject"][0]["metadata"]["labels"]),
            "ownerReferences": [{"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "name": "assistant",
                                 "uid": "so1", "controller": True}],
        },
    }  # fmt: skip
    with_keda_hpa = LiveObjects({**live.by_kind, "HorizontalPodAutoscaler": [keda_hpa]}, [])
    again = RecordingApplier()
    reconcile(body(autoscaling=INFLIGHT), with_keda_hpa, again, GATEWAY, service_monitor_crd=False, keda=True)
    assert again.writes == []


def test_without_keda_inflight_scaling_falls_back_to_the_pods_metric_hpa_and_says_so() -> None:
    applier = RecordingApplier()
    result = reconcile(
        body(autoscaling=INFLIGHT), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=False
    )
    assert "ScaledObject" not in [m["kind"] for m in applier.applied]
    status, reason, message = autoscaling_condition(result)
    assert (status, reason) == ("False", "KEDANotInstalled")
    assert "install KEDA" in message
    assert result.status["phase"] == "Pending"  # the model itself is unaffected


def test_scale_to_zero_without_a_gateway_keeps_one_replica_and_reports_gateway_required() -> None:
    applier = RecordingApplier()
    result = reconcile(
        body(autoscaling=TO_ZERO), LiveObjects({}, []), applier, SETTINGS, service_monitor_crd=False, keda=True
    )
    scaled = next(m for m in applier.applied if m["kind"] == "ScaledObject")
    assert scaled["spec"]["minReplicaCount"] == 1
    assert autoscaling_condition(result)[:2] == ("False", "GatewayRequired")


def test_a_model_that_may_scale_to_zero_keeps_one_replica_until_it_has_been_ready() -> None:
    """Its first start pulls, verifies and loads the model however long that takes; KEDA's idle period counts from
    the ScaledObject's creation, so a zero minimum from the start could stop that first pod before it is Ready."""
    applier = RecordingApplier()
    reconcile(body(autoscaling=TO_ZERO), LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=True)
    first = next(m for m in applier.applied if m["kind"] == "ScaledObject")
    assert first["spec"]["minReplicaCount"] == 1
    assert [t["name"] for t in first["spec"]["triggers"]] == ["inflight"]
    for phase, minimum in (("Loading", 1), ("Ready", 0), ("ScaledToZero", 0), ("Waking", 0)):
        again = RecordingApplier()
        served = {**body(autoscaling=TO_ZERO), "status": {"phase": phase}}
        reconcile(served, live_from(applier), again, GATEWAY, service_monitor_crd=False, keda=True)
        scaled = [m for m in again.applied if m["kind"] == "ScaledObject"]
        assert (scaled[0]["spec"]["minReplicaCount"] if scaled else 1) == minimum, phase


def test_a_deployment_at_zero_reports_scaled_to_zero_then_waking() -> None:
    applier = RecordingApplier()
    served = {**body(autoscaling=TO_ZERO), "status": {"phase": "Ready"}}
    reconcile(served, LiveObjects({}, []), applier, GATEWAY, service_monitor_crd=False, keda=True)
    live = live_from(applier)
    deployment: dict[str, Any] = next(dict(o) for o in live.by_kind["Deployment"])
    live = LiveObjects({**live.by_kind, "Deployment": [deployment]}, live.pods)

    def observe(replicas: int, previous: dict[str, Any]) -> dict[str, Any]:
        deployment["spec"]["replicas"] = replicas
        deployment["status"] = {"replicas": replicas, "readyReplicas": 0}
        document = {**body(autoscaling=TO_ZERO), "status": previous}
        quiet = RecordingApplier()
        status = reconcile(document, live, quiet, GATEWAY, service_monitor_crd=False, keda=True).status
        assert quiet.writes == []  # KEDA owns the count: the operator does not touch it
        return status

    asleep = observe(0, {"phase": "Ready"})
    assert asleep["phase"] == "ScaledToZero"
    assert observe(1, asleep)["phase"] == "Waking"
