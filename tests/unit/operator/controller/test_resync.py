"""The resync loop reconciles only SLMDeployments whose inputs changed, and repairs drift (handlers.resync_once with
in-memory indexes and a recording writer); the compact index bodies keep what a reconcile reads."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from slm_operator.controller import handlers
from slm_operator.controller.cache import Cache
from slm_operator.controller.compact import KeptSLM, compact_owned, compact_pod, compact_slm, keep, keep_slm
from slm_operator.controller.handlers import Controller, resync_once
from slm_operator.controller.kube import Writes
from slm_operator.render.meta import ACCELERATOR_ANNOTATION
from slm_operator.settings import OperatorSettings

KEY = ("team-a", "assistant")


class RecordingWriter:
    def __init__(self) -> None:
        self.writes: list[str] = []
        self.applied: list[dict[str, Any]] = []

    async def write(self, writes: Writes) -> list[str]:
        for _, kind, _, name in writes.deletes:
            self.writes.append(f"delete {kind}/{name}")
        for manifest in writes.applies:
            self.applied.append(manifest)
            self.writes.append(f"apply {manifest['kind']}/{manifest['metadata']['name']}")
        return [str(number) for number in range(100, 100 + len(writes.applies))]  # as as_live numbers them

    async def patch_slm_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.writes.append(f"status {status['phase']}")


def slm() -> dict[str, Any]:
    return {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": "assistant", "namespace": "team-a", "uid": "u1", "generation": 1, "resourceVersion": "1"},
        "spec": {"model": {"source": "ollama://qwen2.5:0.5b"}},
    }


def controller(writer: RecordingWriter) -> Controller:
    indexes: dict[str, Any] = {name: {} for name in handlers.INDEXES}
    indexes["slm_bodies"] = Cache[KeptSLM]()  # kept by the event handler
    indexes["slm_bodies"].put(KEY, KEY, keep_slm(slm()))
    return Controller(
        settings=OperatorSettings(),
        kube=None,  # type: ignore[arg-type]  # discovery is not asked: keda is known
        writer=writer,  # type: ignore[arg-type]
        indexes=indexes,
        service_monitor_crd=False,
        keda=True,
        started=True,
    )


def as_live(ctl: Controller, writer: RecordingWriter) -> None:
    """What the watches would show after the applies: each applied object with a resourceVersion."""
    for number, manifest in enumerate(writer.applied, start=100):
        live = copy.deepcopy(manifest)
        live["metadata"]["resourceVersion"] = str(number)
        ctl.indexes[f"owned_{manifest['kind'].lower()}"][KEY] = [keep(live)]
        handlers.watched(ctl, KEY, manifest["kind"], keep(live))
    writer.applied.clear()


def test_unchanged_inputs_cost_no_reconcile_and_drift_is_repaired() -> None:
    writer = RecordingWriter()
    ctl = controller(writer)
    assert asyncio.run(resync_once(ctl)) == 1
    # the first status of a new SLMDeployment waits up to a resync period (one Ready by then is written once)
    assert sorted(writer.writes) == ["apply Deployment/assistant", "apply Service/assistant"]
    as_live(ctl, writer)
    writer.writes.clear()
    assert asyncio.run(resync_once(ctl)) == 1  # still held: looked at again ...
    assert writer.writes == []  # ... within the period, nothing to write
    ctl.written_at[KEY] -= handlers.PROCESS.resync_seconds  # a period later
    assert asyncio.run(resync_once(ctl)) == 1
    assert writer.writes == ["status Pending"]
    # the watch shows the status written
    ctl.indexes["slm_bodies"].put(KEY, KEY, keep_slm({**slm(), "status": ctl.statuses[KEY][0]}))
    writer.writes.clear()
    assert asyncio.run(resync_once(ctl)) == 0  # then nothing changed: no reconcile at all
    ctl.indexes["owned_service"].pop(KEY)  # deleted by hand
    assert asyncio.run(resync_once(ctl)) == 1
    assert writer.writes == ["apply Service/assistant"]


def test_an_unschedulable_pod_is_reconciled_at_every_resync() -> None:
    writer = RecordingWriter()
    ctl = controller(writer)
    asyncio.run(resync_once(ctl))
    as_live(ctl, writer)
    pod = {
        "metadata": {"name": "p", "resourceVersion": "7", "annotations": {ACCELERATOR_ANNOTATION: "cpu"}},
        "status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]},
    }
    ctl.indexes["owned_pods"][KEY] = [keep(pod, pod=True)]
    asyncio.run(resync_once(ctl))
    assert asyncio.run(resync_once(ctl)) == 1  # fallback depends on the time, not on a change


def test_compact_bodies_keep_what_a_reconcile_reads() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "resourceVersion": "5", "managedFields": [{"manager": "x"}], "labels": {"l": "v"}},
        "spec": {"replicas": 2},
        "status": {"readyReplicas": 1, "replicas": 2, "conditions": [{"type": "Available"}]},
    }
    kept = compact_owned(deployment)
    assert "managedFields" not in kept["metadata"] and kept["metadata"]["labels"] == {"l": "v"}
    assert kept["spec"] == {"replicas": 2} and kept["status"] == {"readyReplicas": 1, "replicas": 2}
    service = compact_owned({**deployment, "kind": "Service"})
    assert "status" not in service
    pod = compact_pod(
        {
            "metadata": {"name": "p", "annotations": {ACCELERATOR_ANNOTATION: "cpu", "other": "x"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c"}]},
            "status": {
                "phase": "Running",
                "containerStatuses": [{"name": "c", "ready": True, "state": {}, "imageID": "sha256:..."}],
            },
        }
    )
    assert pod["metadata"]["annotations"] == {ACCELERATOR_ANNOTATION: "cpu"} and pod["spec"] == {"nodeName": "n"}
    assert pod["status"]["containerStatuses"] == [{"name": "c", "ready": True, "state": {}}]
    body = slm()
    body["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": "{...}", "keep": "me"}
    assert compact_slm(body)["metadata"]["annotations"] == {"keep": "me"}


def test_index_records_decode_to_the_compact_bodies() -> None:
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "a", "resourceVersion": "5", "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"replicas": 2},
    }
    kept = keep(deployment)
    assert (kept.name, kept.version, kept.unschedulable) == ("a", "5", False)
    assert kept.body() == compact_owned(deployment)
    body = {**slm(), "status": {"phase": "Ready", "replicas": 1}}
    record = keep_slm(body)
    assert record.phase == "Ready" and record.body() == compact_slm(body)
    assert record.status == keep_slm({**slm(), "status": {"replicas": 1, "phase": "Ready"}}).status  # key order
    assert keep_slm(slm()).phase == "Pending"


def test_an_apply_the_watch_has_not_shown_yet_is_not_sent_again_within_a_period() -> None:
    writer = RecordingWriter()
    ctl = controller(writer)
    asyncio.run(resync_once(ctl))
    assert sorted(writer.writes) == ["apply Deployment/assistant", "apply Service/assistant"]
    writer.writes.clear()
    assert asyncio.run(resync_once(ctl)) == 1  # the index has no Service or Deployment yet ...
    assert writer.writes == []  # ... but they were just applied: the watch is on its way
    for applied in list(ctl.applied):
        digest, version, at = ctl.applied[applied]
        ctl.applied[applied] = (digest, version, at - handlers.PROCESS.resync_seconds)  # a period later
    assert asyncio.run(resync_once(ctl)) == 1  # still missing: applied again (level-triggered)
    assert sorted(writer.writes) == ["apply Deployment/assistant", "apply Service/assistant"]
