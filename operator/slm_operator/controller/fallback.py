"""Hardware fallback: which accelerator tier to render for now (pure).

Pods of the active tier that stay unschedulable (PodScheduled=False, reason Unschedulable) for longer than
spec.hardware.fallbackAfter move the SLMDeployment to the next accelerator in spec.hardware.fallback. The
active tier is kept in status.hardware.active, so the decision survives operator restarts. A tier that the
spec no longer lists sends the deployment back to the primary accelerator.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from slm_operator.api.enums import Accelerator
from slm_operator.api.quantity import parse_duration_seconds
from slm_operator.api.spec import HardwareSpec
from slm_operator.render.meta import ACCELERATOR_ANNOTATION

__all__ = ["TierDecision", "choose_tier", "unschedulable_since"]


@dataclass(frozen=True)
class TierDecision:
    accelerator: Accelerator
    fell_back: bool  # True when this decision moved to a new tier
    reason: str


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def unschedulable_since(pods: Iterable[Mapping[str, Any]], accelerator: Accelerator) -> datetime | None:
    """When the earliest still-unschedulable pod of the tier became so; None if any pod of it was placed."""
    since: datetime | None = None
    found = False
    for pod in pods:
        annotations = pod.get("metadata", {}).get("annotations") or {}
        if annotations.get(ACCELERATOR_ANNOTATION) != accelerator.value:
            continue
        if pod.get("metadata", {}).get("deletionTimestamp"):
            continue
        found = True
        scheduled = next(
            (c for c in pod.get("status", {}).get("conditions") or [] if c.get("type") == "PodScheduled"), None
        )
        if not scheduled or scheduled.get("status") != "False" or scheduled.get("reason") != "Unschedulable":
            return None
        stamp = scheduled.get("lastTransitionTime")
        when = _parse_time(stamp) if stamp else None
        if when and (since is None or when < since):
            since = when
    return since if found else None


def choose_tier(
    hardware: HardwareSpec, active: str | None, pods: Iterable[Mapping[str, Any]], now: datetime
) -> TierDecision:
    """The accelerator to render for, given the recorded active tier and the pods' scheduling state."""
    tiers = hardware.tiers()
    current = Accelerator(active) if active in {t.value for t in tiers} else tiers[0]
    index = tiers.index(current)
    if index + 1 >= len(tiers):
        return TierDecision(current, False, _reason(tiers, index, hardware.fallback_after))
    since = unschedulable_since(pods, current)
    limit = parse_duration_seconds(hardware.fallback_after)
    if since is None or (now - since).total_seconds() < limit:
        return TierDecision(current, False, _reason(tiers, index, hardware.fallback_after))
    return TierDecision(tiers[index + 1], True, _reason(tiers, index + 1, hardware.fallback_after))


def _reason(tiers: list[Accelerator], index: int, after: str) -> str:
    if index == 0:
        return f"primary accelerator {tiers[0].value}"
    skipped = " and ".join(t.value for t in tiers[:index])
    return f"{skipped} unschedulable for {after}; running on {tiers[index].value}"
