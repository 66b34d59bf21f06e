"""reconcile() through its Applier protocol: what it applies, deletes and reports, with a recording applier."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from slm_operator.api import ManifestError
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

    def apply(self, manifest: dict[str, Any]) -> None:
        self.applied.append(manifest)

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None:
        self.deleted.append((api_version, kind, namespace, name))


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
