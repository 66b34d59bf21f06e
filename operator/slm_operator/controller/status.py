"""SLMDeployment status from the owned Deployment and its pods (pure).

Phase: Failed (spec invalid or the model cannot be pulled), Ready (every desired replica ready and
up to date), Degraded (some ready, some failing or missing), Downloading (init containers pulling),
Loading (running, not yet ready), Pending (not scheduled / image pull), ScaledToZero (autoscaling with
minReplicas 0 took the Deployment to zero replicas), Waking (replicas asked for again after ScaledToZero, none
ready yet). Conditions follow metav1.Condition; lastTransitionTime only moves when a condition's status changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from slm_operator.api.enums import Accelerator, Phase
from slm_operator.render.deployment import PULL_CONTAINER, RUNTIME_CONTAINER
from slm_runtime.fetch.errors import pull_failures, reason_for_exit_code
from slm_runtime.shutdown import SERVE_FAILURES, failure_for_exit_code

__all__ = [
    "Event",
    "Observation",
    "PodProblem",
    "build_status",
    "merge_conditions",
    "pod_problems",
    "pulled_model",
    "transition_events",
]

# Waiting reasons of containers that mean "this will not fix itself soon".
_WAITING_REASONS = {
    "ImagePullBackOff": "ImagePullBackOff",
    "ErrImagePull": "ImagePullBackOff",
    "InvalidImageName": "ImagePullBackOff",
    "CrashLoopBackOff": "CrashLoop",
    "CreateContainerConfigError": "ContainerConfigError",
}
# Problems that will not fix themselves: the permanent pull failures (the runtime's classes say which) and a pod
# spec the kubelet cannot run.
_FATAL_REASONS = (
    {cls.reason for cls in pull_failures() if cls.permanent}
    | {failure.reason for failure in SERVE_FAILURES if failure.permanent}
    | {"ContainerConfigError"}
)


@dataclass(frozen=True)
class PodProblem:
    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    """What the controller saw for one SLMDeployment."""

    generation: int
    desired_replicas: int | None  # None while the HPA owns the count (then the Deployment's is used)
    deployment: Mapping[str, Any] | None
    pods: Sequence[Mapping[str, Any]]
    accelerator: Accelerator
    primary: Accelerator
    tier_reason: str
    endpoint: str
    selector: str
    engine: str
    source: str
    pinned_sha256: str | None
    # spec.autoscaling asks for scale to zero (enabled, minReplicas 0).
    scales_to_zero: bool = False
    # The Autoscaling condition (status, reason, message) from render.scaling.ScalingPlan; None: autoscaling is off.
    autoscaling: tuple[bool, str, str] | None = None


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to post on the SLMDeployment."""

    type: str  # Normal or Warning
    reason: str
    message: str


def _statuses(pod: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    return list(pod.get("status", {}).get(key) or [])


def pod_problems(pod: Mapping[str, Any]) -> list[PodProblem]:
    """Why a pod is not serving, in the operator's condition reasons."""
    problems: list[PodProblem] = []
    for condition in pod.get("status", {}).get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            problems.append(PodProblem("Unschedulable", condition.get("message", "")))
    for status in _statuses(pod, "initContainerStatuses"):
        terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        if terminated and terminated.get("exitCode", 0) != 0 and status.get("name") == PULL_CONTAINER:
            failure = reason_for_exit_code(int(terminated.get("exitCode", 1)))
            problems.append(PodProblem(failure.reason, str(terminated.get("message") or "").strip()[:1024]))
    for status in _statuses(pod, "containerStatuses"):
        terminated = (status.get("state") or {}).get("terminated") or (status.get("lastState") or {}).get("terminated")
        serve_failure = failure_for_exit_code(int(terminated.get("exitCode", 0))) if terminated else None
        if terminated and serve_failure and status.get("name") == RUNTIME_CONTAINER:
            problems.append(PodProblem(serve_failure.reason, str(terminated.get("message") or "").strip()[:1024]))
    for status in [*_statuses(pod, "initContainerStatuses"), *_statuses(pod, "containerStatuses")]:
        waiting = (status.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") in _WAITING_REASONS:
            problems.append(PodProblem(_WAITING_REASONS[waiting["reason"]], waiting.get("message", "")))
        last = (status.get("lastState") or {}).get("terminated") or {}
        if last.get("reason") == "OOMKilled":
            problems.append(PodProblem("OOMKilled", f"container {status.get('name')} ran out of memory"))
    return problems


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in pod.get("status", {}).get("conditions") or []
    )


def _initializing(pod: Mapping[str, Any]) -> bool:
    inits = _statuses(pod, "initContainerStatuses")
    return any(not (s.get("state") or {}).get("terminated") for s in inits) and pod.get("spec", {}).get("nodeName")


def pulled_model(pods: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The pull result an init container left as its termination message (digest, size), if any."""
    for pod in pods:
        for status in _statuses(pod, "initContainerStatuses"):
            terminated = (status.get("state") or {}).get("terminated") or {}
            if status.get("name") == PULL_CONTAINER and terminated.get("exitCode") == 0 and terminated.get("message"):
                try:
                    result = json.loads(terminated["message"])
                except ValueError:
                    continue
                if isinstance(result, dict) and "digest" in result:
                    return result
    return None


def _condition(kind: str, ok: bool, reason: str, message: str, generation: int) -> dict[str, Any]:
    return {
        "type": kind,
        "status": "True" if ok else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None, current: Sequence[dict[str, Any]], now: str
) -> list[dict[str, Any]]:
    """Current conditions, keeping each one's lastTransitionTime while its status is unchanged."""
    before = {c.get("type"): c for c in previous or []}
    merged = []
    for condition in current:
        old = before.get(condition["type"])
        same = old is not None and old.get("status") == condition["status"] and old.get("lastTransitionTime")
        merged.append({**condition, "lastTransitionTime": old["lastTransitionTime"] if same and old else now})
    return merged


def _phase(desired: int, ready: int, updated: int, pods: Sequence[Mapping[str, Any]], fatal: bool) -> Phase:
    live = [p for p in pods if not p.get("metadata", {}).get("deletionTimestamp")]
    if desired == 0 or (ready >= desired and updated >= desired):
        return Phase.READY if not fatal or ready >= desired else Phase.DEGRADED
    if ready > 0:
        return Phase.DEGRADED
    if fatal:
        return Phase.FAILED
    if any(_initializing(p) for p in live):
        return Phase.DOWNLOADING
    if any(p.get("spec", {}).get("nodeName") and p.get("status", {}).get("phase") == "Running" for p in live):
        return Phase.LOADING
    return Phase.PENDING


_ASLEEP = (Phase.SCALED_TO_ZERO, Phase.WAKING)
_STARTING = (Phase.PENDING, Phase.DOWNLOADING, Phase.LOADING)


def _autoscaled_phase(phase: Phase, obs: Observation, desired: int, ready: int, previous_phase: str | None) -> Phase:
    """ScaledToZero and Waking, which only the autoscaler's history tells apart from the phases _phase gives."""
    if obs.scales_to_zero and obs.deployment is not None and desired == 0:
        return Phase.SCALED_TO_ZERO
    if desired >= 1 and ready == 0 and previous_phase in _ASLEEP and phase in _STARTING:
        return Phase.WAKING
    return phase


def _ready_message(phase: Phase, ready: int, desired: int) -> str:
    if phase is Phase.SCALED_TO_ZERO:
        return "0 replicas: scaled to zero while idle; a request through slm-gateway wakes the model"
    if phase is Phase.WAKING:
        return f"{ready}/{desired} replicas ready: waking from zero; slm-gateway holds requests until one is ready"
    return f"{ready}/{desired} replicas ready"


def build_status(obs: Observation, previous: Mapping[str, Any] | None, now: str) -> dict[str, Any]:
    """The status the SLMDeployment should have (camelCase, ready to patch)."""
    deployment_status = (obs.deployment or {}).get("status") or {}
    deployment_spec = (obs.deployment or {}).get("spec") or {}
    desired = obs.desired_replicas if obs.desired_replicas is not None else int(deployment_spec.get("replicas", 1))
    ready = int(deployment_status.get("readyReplicas") or 0)
    updated = int(deployment_status.get("updatedReplicas") or 0)
    current_rollout = deployment_status.get("observedGeneration") == (obs.deployment or {}).get("metadata", {}).get(
        "generation"
    )
    problems = [problem for pod in obs.pods for problem in pod_problems(pod)]
    fatal = any(p.reason in _FATAL_REASONS for p in problems)
    phase = _phase(desired, ready, updated if current_rollout else 0, obs.pods, fatal)
    phase = _autoscaled_phase(phase, obs, desired, ready, (previous or {}).get("phase"))
    first = problems[0] if problems else None

    serving = phase in (Phase.READY, Phase.SCALED_TO_ZERO)
    progressing = not serving and not fatal
    if phase is Phase.WAKING:
        rollout_reason = "Waking"
    elif progressing:
        rollout_reason = "RolloutInProgress"
    else:
        rollout_reason = "Stalled" if fatal else "RolloutComplete"
    ready_reason = "ReplicasReady" if phase is Phase.READY else phase.value
    conditions = [
        _condition("Ready", serving, ready_reason, _ready_message(phase, ready, desired), obs.generation),
        _condition("Progressing", progressing, rollout_reason, f"{updated}/{desired} replicas updated", obs.generation),
        _condition(
            "Degraded",
            first is not None,
            first.reason if first else "AsExpected",
            first.message if first else "no pod problems",
            obs.generation,
        ),
        _condition(
            "HardwareFallback",
            obs.accelerator is not obs.primary,
            "FellBack" if obs.accelerator is not obs.primary else "PrimaryAccelerator",
            obs.tier_reason,
            obs.generation,
        ),
    ]
    if obs.autoscaling is not None:
        conditions.append(_condition("Autoscaling", *obs.autoscaling, obs.generation))
    model: dict[str, Any] = {"source": obs.source}
    pulled = pulled_model(obs.pods)
    if pulled and pulled.get("source") in (None, obs.source):
        model["digest"] = pulled["digest"]
        if "sizeBytes" in pulled:
            model["sizeBytes"] = pulled["sizeBytes"]
    elif obs.pinned_sha256:
        model["digest"] = f"sha256:{obs.pinned_sha256}"
    return {
        "phase": phase.value,
        "observedGeneration": obs.generation,
        "replicas": int(deployment_status.get("replicas") or 0),
        "readyReplicas": ready,
        "selector": obs.selector,
        "endpoint": obs.endpoint,
        "engine": obs.engine,
        "hardware": {"active": obs.accelerator.value, "reason": obs.tier_reason},
        "model": model,
        "conditions": merge_conditions((previous or {}).get("conditions"), conditions, now),
    }


def _phase_message(before: str | None, after: str) -> str:
    if after == Phase.SCALED_TO_ZERO:
        return (
            f"phase {before} -> {after}: no request in flight for spec.autoscaling.scaleToZeroAfter, so the "
            "autoscaler took the model to zero replicas; a request through slm-gateway wakes it"
        )
    if after == Phase.WAKING:
        return f"phase {before} -> {after}: scaling up from zero; slm-gateway holds requests until a replica is ready"
    if before == Phase.WAKING:
        return f"phase {before} -> {after}: awake, scaled up from zero"
    return f"phase {before} -> {after}"


def transition_events(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> list[Event]:
    """The Events a status change deserves: one per phase transition (ScaledToZero and Waking included, into and
    out of), and a Warning when the Autoscaling condition turns False or changes its reason while False."""
    events: list[Event] = []
    before, after = (previous or {}).get("phase"), current.get("phase")
    if after and before != after:
        events.append(Event("Normal", str(after), _phase_message(before, str(after))))
    old = next((c for c in (previous or {}).get("conditions") or [] if c.get("type") == "Autoscaling"), None)
    new = next((c for c in current.get("conditions") or [] if c.get("type") == "Autoscaling"), None)
    repeated = (
        old is not None
        and new is not None
        and (old.get("status"), old.get("reason"))
        == (
            new.get("status"),
            new.get("reason"),
        )
    )
    if new and new.get("status") == "False" and not repeated:
        events.append(Event("Warning", str(new["reason"]), str(new.get("message", ""))))
    return events
