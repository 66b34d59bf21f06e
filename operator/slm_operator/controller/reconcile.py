"""One reconcile of one SLMDeployment: validate, choose the hardware tier, render, apply what differs,
delete what is no longer wanted, and compute the status. The kopf handlers call ``reconcile``; live
objects come from watch caches (kopf's index, watch.py), so a steady state costs no API requests at all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from slm_operator.api.enums import Phase
from slm_operator.api.errors import ManifestError, validate_manifest
from slm_operator.api.resource import KIND, SLMDeployment
from slm_operator.api.spec import HardwareSpec
from slm_operator.controller.drift import contains
from slm_operator.controller.fallback import choose_tier
from slm_operator.controller.status import Observation, build_status, merge_conditions
from slm_operator.render import OWNED_KINDS, RenderOptions, endpoint, plan_for, render_all, selector_labels
from slm_operator.settings import OperatorSettings

__all__ = ["Applier", "LiveObjects", "ReconcileResult", "invalid_status", "reconcile"]


class Applier(Protocol):
    def apply(self, manifest: dict[str, Any]) -> None: ...

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> None: ...


@dataclass(frozen=True)
class LiveObjects:
    """The owned objects that exist now, by kind, plus the pods."""

    by_kind: Mapping[str, Sequence[Mapping[str, Any]]]
    pods: Sequence[Mapping[str, Any]]

    def get(self, kind: str, name: str) -> Mapping[str, Any] | None:
        return next((o for o in self.by_kind.get(kind, ()) if o.get("metadata", {}).get("name") == name), None)


@dataclass
class ReconcileResult:
    status: dict[str, Any]
    applied: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    fell_back_to: str | None = None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid_status(error: ManifestError, generation: int, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """Status for a spec the CRD accepted but the operator cannot use: Failed, naming the field."""
    message = "; ".join(str(e) for e in error.errors)
    conditions = [
        {
            "type": "Ready",
            "status": "False",
            "reason": "InvalidSpec",
            "message": message,
            "observedGeneration": generation,
        }
    ]
    return {
        **{k: v for k, v in (previous or {}).items() if k not in ("phase", "conditions", "observedGeneration")},
        "phase": Phase.FAILED.value,
        "observedGeneration": generation,
        "conditions": merge_conditions((previous or {}).get("conditions"), conditions, _now()),
    }


def _owner_name(obj: Mapping[str, Any]) -> str:
    return str(obj.get("metadata", {}).get("name", ""))


def _controlled_by_another_kind(obj: Mapping[str, Any]) -> bool:
    """Whether a controller other than an SLMDeployment owns ``obj`` (KEDA's HPA, say, should it carry our labels):
    never ours to prune."""
    refs = obj.get("metadata", {}).get("ownerReferences") or []
    return any(ref.get("controller") and ref.get("kind") != KIND for ref in refs)


# Phases that only a model that has been Ready reaches.
_SERVED = frozenset({Phase.READY.value, Phase.SCALED_TO_ZERO.value, Phase.WAKING.value})


def _live_replicas(deployment: Mapping[str, Any] | None) -> int | None:
    replicas = ((deployment or {}).get("spec") or {}).get("replicas")
    return int(replicas) if replicas is not None else None


def reconcile(
    body: Mapping[str, Any],
    live: LiveObjects,
    kube: Applier,
    settings: OperatorSettings,
    *,
    service_monitor_crd: bool,
    keda: bool = False,
    now: datetime | None = None,
) -> ReconcileResult:
    """Bring the owned objects in line with the SLMDeployment ``body``; raises ManifestError on a bad spec.

    ``keda``: whether the cluster serves KEDA's ScaledObject (in-flight autoscaling and scale to zero need it).
    """
    previous = dict(body.get("status") or {})
    slm: SLMDeployment = validate_manifest({k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")})
    generation = int(body.get("metadata", {}).get("generation") or 0)
    hardware = slm.spec.hardware or HardwareSpec()
    tier = choose_tier(hardware, (previous.get("hardware") or {}).get("active"), live.pods, now or datetime.now(UTC))
    deployment = live.get("Deployment", slm.metadata.name)

    options = RenderOptions(
        tier.accelerator,
        service_monitor_crd,
        keda=keda,
        live_replicas=_live_replicas(deployment),
        served_once=previous.get("phase") in _SERVED,
    )
    desired = render_all(slm, settings, options)
    plan = plan_for(slm, settings, options)
    result = ReconcileResult(status={}, fell_back_to=tier.accelerator.value if tier.fell_back else None)

    # Deletions first: KEDA refuses a ScaledObject for a Deployment that another HPA (our own, from before a switch
    # of autoscaling mode) still targets.
    wanted = {(m["kind"], m["metadata"]["name"]) for m in desired}
    namespace = slm.metadata.namespace or "default"
    for api_version, kind in OWNED_KINDS:
        for obj in live.by_kind.get(kind, ()):
            if (
                (kind, _owner_name(obj)) not in wanted
                and not obj.get("metadata", {}).get("deletionTimestamp")
                and not _controlled_by_another_kind(obj)
            ):
                kube.delete(api_version, kind, namespace, _owner_name(obj))
                result.deleted.append(f"{kind}/{_owner_name(obj)}")

    for manifest in desired:
        current = live.get(manifest["kind"], manifest["metadata"]["name"])
        if current is None or not contains(current, manifest):
            kube.apply(manifest)
            result.applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")

    autoscaling = slm.spec.autoscaling
    autoscaled = bool(autoscaling and autoscaling.enabled)
    selector = ",".join(f"{k}={v}" for k, v in sorted(selector_labels(slm).items()))
    observation = Observation(
        generation=generation,
        desired_replicas=None if autoscaled else slm.spec.replicas,
        deployment=deployment,
        pods=live.pods,
        accelerator=tier.accelerator,
        primary=hardware.accelerator,
        tier_reason=tier.reason,
        endpoint=endpoint(slm),
        selector=selector,
        engine=slm.spec.resolved_engine().value,
        source=slm.spec.model.source,
        pinned_sha256=slm.spec.model.sha256,
        scales_to_zero=bool(autoscaling and autoscaling.scales_to_zero),
        autoscaling=plan.condition,
    )
    result.status = build_status(observation, previous, _now())
    return result
