"""The controller's pure decisions: drift detection, hardware fallback, status and phase."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from slm_operator.api import Accelerator, HardwareSpec
from slm_operator.controller.drift import contains
from slm_operator.controller.fallback import choose_tier, unschedulable_since
from slm_operator.controller.status import (
    Observation,
    build_status,
    merge_conditions,
    pod_problems,
    pulled_model,
    transition_events,
)

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def stamp(seconds_ago: float) -> str:
    return (NOW - timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod(
    accelerator: str = "cpu",
    *,
    scheduled: bool = True,
    unschedulable_for: float = 0,
    ready: bool = False,
    init: dict[str, Any] | None = None,
    waiting: str | None = None,
    running: bool = False,
) -> dict[str, Any]:
    conditions = [
        {"type": "PodScheduled", "status": "True"}
        if scheduled
        else {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": "0/5 nodes are available: 5 Insufficient nvidia.com/gpu.",
            "lastTransitionTime": stamp(unschedulable_for),
        },
        {"type": "Ready", "status": "True" if ready else "False"},
    ]
    status: dict[str, Any] = {"conditions": conditions, "phase": "Running" if running or ready else "Pending"}
    if init is not None:
        status["initContainerStatuses"] = [{"name": "model-pull", "state": init}]
    if waiting:
        status["containerStatuses"] = [{"name": "runtime", "state": {"waiting": {"reason": waiting, "message": "m"}}}]
    return {
        "metadata": {"name": "p", "annotations": {"slm-operator.io/accelerator": accelerator}},
        "spec": {"nodeName": "node-1"} if scheduled else {},
        "status": status,
    }


class TestDrift:
    def test_live_with_server_defaults_contains_desired(self) -> None:
        desired = {"spec": {"replicas": 1, "template": {"containers": [{"name": "a", "ports": [{"port": 1}]}]}}}
        live = {
            "spec": {
                "replicas": 1,
                "progressDeadlineSeconds": 600,
                "template": {"containers": [{"name": "a", "ports": [{"port": 1, "protocol": "TCP"}]}]},
            }
        }
        assert contains(live, desired)

    def test_changed_or_missing_fields_are_drift(self) -> None:
        assert not contains({"spec": {"replicas": 2}}, {"spec": {"replicas": 1}})
        assert not contains({"spec": {}}, {"spec": {"replicas": 1}})
        assert not contains({"items": [1, 2]}, {"items": [1]})
        assert not contains({"flag": "true"}, {"flag": True})

    def test_quantities_compare_by_value(self) -> None:
        assert contains({"cpu": "500m", "memory": "1Gi"}, {"cpu": "0.5", "memory": "1024Mi"})
        assert not contains({"cpu": "1"}, {"cpu": "2"})


class TestFallback:
    HW = HardwareSpec(accelerator=Accelerator.NVIDIA_GPU, fallback=[Accelerator.CPU], fallback_after="120s")

    def test_stays_on_primary_while_pods_are_scheduled_or_not_long_unschedulable(self) -> None:
        assert choose_tier(self.HW, None, [pod("nvidia-gpu")], NOW).accelerator is Accelerator.NVIDIA_GPU
        young = [pod("nvidia-gpu", scheduled=False, unschedulable_for=30)]
        assert choose_tier(self.HW, None, young, NOW).accelerator is Accelerator.NVIDIA_GPU

    def test_falls_back_after_the_delay(self) -> None:
        decision = choose_tier(self.HW, None, [pod("nvidia-gpu", scheduled=False, unschedulable_for=121)], NOW)
        assert decision.accelerator is Accelerator.CPU and decision.fell_back
        assert decision.reason == "nvidia-gpu unschedulable for 120s; running on cpu"

    def test_one_placed_pod_of_the_tier_prevents_fallback(self) -> None:
        pods = [pod("nvidia-gpu", scheduled=False, unschedulable_for=500), pod("nvidia-gpu")]
        assert unschedulable_since(pods, Accelerator.NVIDIA_GPU) is None
        assert not choose_tier(self.HW, None, pods, NOW).fell_back

    def test_active_tier_is_sticky_and_the_last_tier_is_final(self) -> None:
        pods = [pod("cpu", scheduled=False, unschedulable_for=900)]
        decision = choose_tier(self.HW, "cpu", pods, NOW)
        assert decision.accelerator is Accelerator.CPU and not decision.fell_back

    def test_a_tier_the_spec_dropped_returns_to_the_primary(self) -> None:
        assert choose_tier(self.HW, "npu", [], NOW).accelerator is Accelerator.NVIDIA_GPU


def observation(pods: list[dict[str, Any]], deployment: dict[str, Any] | None, **kw: Any) -> Observation:
    base: dict[str, Any] = {
        "generation": 3,
        "desired_replicas": 2,
        "deployment": deployment,
        "pods": pods,
        "accelerator": Accelerator.CPU,
        "primary": Accelerator.CPU,
        "tier_reason": "primary accelerator cpu",
        "endpoint": "http://a.ns.svc:11434",
        "selector": "app.kubernetes.io/instance=a,app.kubernetes.io/name=slm-runtime",
        "engine": "llama-cpp",
        "source": "ollama://qwen2.5:3b",
        "pinned_sha256": None,
    }
    base.update(kw)
    return Observation(**base)


def deployment(ready: int, updated: int = 2, replicas: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"generation": 5},
        "spec": {"replicas": replicas},
        "status": {"observedGeneration": 5, "replicas": replicas, "readyReplicas": ready, "updatedReplicas": updated},
    }


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


class TestStatus:
    def test_ready_when_every_replica_is_ready_and_updated(self) -> None:
        status = build_status(observation([pod(ready=True)] * 2, deployment(ready=2)), None, "t0")
        assert status["phase"] == "Ready"
        assert (status["replicas"], status["readyReplicas"], status["observedGeneration"]) == (2, 2, 3)
        assert conditions(status)["Ready"] == ("True", "ReplicasReady")
        assert conditions(status)["HardwareFallback"] == ("False", "PrimaryAccelerator")
        assert status["endpoint"] == "http://a.ns.svc:11434" and status["selector"].startswith("app.kubernetes.io/")

    def test_downloading_while_the_init_container_runs(self) -> None:
        pods = [pod(init={"running": {}})]
        assert build_status(observation(pods, deployment(ready=0)), None, "t")["phase"] == "Downloading"

    def test_loading_while_running_but_not_ready(self) -> None:
        pods = [pod(init={"terminated": {"exitCode": 0}}, running=True)]
        assert build_status(observation(pods, deployment(ready=0)), None, "t")["phase"] == "Loading"

    def test_pending_and_unschedulable_reason(self) -> None:
        status = build_status(observation([pod(scheduled=False)], deployment(ready=0)), None, "t")
        assert status["phase"] == "Pending"
        assert conditions(status)["Degraded"] == ("True", "Unschedulable")

    def test_degraded_when_some_replicas_fail(self) -> None:
        pods = [pod(ready=True), pod(waiting="CrashLoopBackOff", running=True)]
        status = build_status(observation(pods, deployment(ready=1)), None, "t")
        assert status["phase"] == "Degraded"
        assert conditions(status)["Degraded"] == ("True", "CrashLoop")

    def test_digest_mismatch_fails(self) -> None:
        failed = {"terminated": {"exitCode": 5, "message": "digest mismatch: expected sha256:aa actual sha256:bb"}}
        status = build_status(observation([pod(init=failed)], deployment(ready=0)), None, "t")
        assert status["phase"] == "Failed"
        assert conditions(status)["Degraded"] == ("True", "DigestMismatch")
        assert "expected sha256:aa" in next(c for c in status["conditions"] if c["type"] == "Degraded")["message"]

    def test_image_pull_and_oom_reasons(self) -> None:
        assert pod_problems(pod(waiting="ImagePullBackOff"))[0].reason == "ImagePullBackOff"
        oom = pod(ready=True)
        oom["status"]["containerStatuses"] = [{"name": "runtime", "lastState": {"terminated": {"reason": "OOMKilled"}}}]
        assert pod_problems(oom)[0].reason == "OOMKilled"

    def test_model_digest_from_the_pull_result_or_the_pin(self) -> None:
        result = {"source": "ollama://qwen2.5:3b", "digest": "sha256:" + "c" * 64, "sizeBytes": 42}
        pulled = pod(ready=True, init={"terminated": {"exitCode": 0, "message": json.dumps(result)}})
        assert pulled_model([pulled]) == result
        status = build_status(observation([pulled], deployment(ready=2)), None, "t")
        assert status["model"] == {"source": "ollama://qwen2.5:3b", "digest": result["digest"], "sizeBytes": 42}
        pinned = build_status(observation([pod(ready=True)], deployment(ready=2), pinned_sha256="d" * 64), None, "t")
        assert pinned["model"]["digest"] == "sha256:" + "d" * 64

    def test_fallback_condition(self) -> None:
        obs = observation([], deployment(ready=2), primary=Accelerator.NVIDIA_GPU, tier_reason="gpu gone")
        assert conditions(build_status(obs, None, "t"))["HardwareFallback"] == ("True", "FellBack")

    def test_transition_times_move_only_when_status_changes(self) -> None:
        first = merge_conditions(None, [{"type": "Ready", "status": "False", "reason": "Pending"}], "t1")
        same = merge_conditions(first, [{"type": "Ready", "status": "False", "reason": "Loading"}], "t2")
        flipped = merge_conditions(same, [{"type": "Ready", "status": "True", "reason": "ReplicasReady"}], "t3")
        assert [c["lastTransitionTime"] for c in (*first, *same, *flipped)] == ["t1", "t1", "t3"]

    def test_status_is_stable_across_identical_observations(self) -> None:
        obs = observation([pod(ready=True)] * 2, deployment(ready=2))
        first = build_status(obs, None, "t1")
        assert build_status(obs, first, "t2") == first


class TestScaleToZeroStatus:
    """Phases ScaledToZero and Waking (autoscaling with minReplicas 0), their conditions and Events."""

    @staticmethod
    def status(
        replicas: int, ready: int, previous: dict[str, Any] | None, pods: list[dict[str, Any]] | None = None, **kw: Any
    ) -> dict[str, Any]:
        kw = {"scales_to_zero": True, "autoscaling": (True, "ScaleToZero", "KEDA ScaledObject a"), **kw}
        obs = observation(
            pods or [], deployment(ready=ready, updated=replicas, replicas=replicas), desired_replicas=None, **kw
        )
        return build_status(obs, previous, "t")

    def test_scaled_to_zero_is_serving_through_the_gateway(self) -> None:
        status = self.status(0, 0, {"phase": "Ready"})
        assert status["phase"] == "ScaledToZero"
        assert conditions(status)["Ready"] == ("True", "ScaledToZero")
        assert conditions(status)["Progressing"] == ("False", "RolloutComplete")
        assert conditions(status)["Autoscaling"] == ("True", "ScaleToZero")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert "slm-gateway wakes the model" in ready["message"]

    def test_waking_after_zero_until_a_replica_is_ready(self) -> None:
        asleep = self.status(0, 0, {"phase": "Ready"})
        waking = self.status(1, 0, asleep, [pod(init={"running": {}})])
        assert waking["phase"] == "Waking"
        assert conditions(waking)["Ready"] == ("False", "Waking")
        assert conditions(waking)["Progressing"] == ("True", "Waking")
        still = self.status(1, 0, waking, [pod(init={"terminated": {"exitCode": 0}}, running=True)])
        assert still["phase"] == "Waking"
        assert self.status(1, 1, still, [pod(ready=True)])["phase"] == "Ready"

    def test_a_new_model_loading_is_not_waking(self) -> None:
        assert self.status(1, 0, None, [pod(init={"running": {}})])["phase"] == "Downloading"
        assert self.status(1, 0, {"phase": "Pending"}, [pod(running=True)])["phase"] == "Loading"

    def test_a_fatal_problem_while_waking_fails(self) -> None:
        failed = {"terminated": {"exitCode": 5, "message": "digest mismatch"}}
        assert self.status(1, 0, {"phase": "Waking"}, [pod(init=failed)])["phase"] == "Failed"

    def test_zero_replicas_without_scale_to_zero_stays_ready(self) -> None:
        obs = observation([], deployment(ready=0, updated=0, replicas=0), desired_replicas=None)
        assert build_status(obs, {"phase": "Ready"}, "t")["phase"] == "Ready"

    def test_no_autoscaling_condition_when_autoscaling_is_off(self) -> None:
        status = build_status(observation([pod(ready=True)] * 2, deployment(ready=2)), None, "t")
        assert "Autoscaling" not in conditions(status)

    def test_an_event_for_each_transition_into_and_out_of_zero(self) -> None:
        ready = self.status(1, 1, None, [pod(ready=True)])
        asleep = self.status(0, 0, ready)
        waking = self.status(1, 0, asleep)
        awake = self.status(1, 1, waking, [pod(ready=True)])
        events = [transition_events(a, b) for a, b in ((ready, asleep), (asleep, waking), (waking, awake))]
        assert [[(e.type, e.reason) for e in batch] for batch in events] == [
            [("Normal", "ScaledToZero")],
            [("Normal", "Waking")],
            [("Normal", "Ready")],
        ]
        assert "scaleToZeroAfter" in events[0][0].message and "slm-gateway" in events[0][0].message
        assert events[2][0].message == "phase Waking -> Ready: awake, scaled up from zero"
        assert transition_events(asleep, asleep) == []

    def test_a_warning_when_autoscaling_cannot_work_once_per_reason(self) -> None:
        ok = self.status(1, 1, None, [pod(ready=True)])
        broken = self.status(1, 1, ok, [pod(ready=True)], autoscaling=(False, "KEDANotInstalled", "install KEDA"))
        (event,) = transition_events(ok, broken)
        assert (event.type, event.reason, event.message) == ("Warning", "KEDANotInstalled", "install KEDA")
        assert transition_events(broken, broken) == []
        other = self.status(1, 1, broken, [pod(ready=True)], autoscaling=(False, "GatewayRequired", "no gateway"))
        assert [e.reason for e in transition_events(broken, other)] == ["GatewayRequired"]
        assert transition_events(other, ok) == []
