"""What the operator keeps of each watched object (pure): only the fields a reconcile reads.

kopf indexes hold what their handlers return for as long as the object exists. Whole bodies cost most of the
operator's memory at scale (managedFields alone are often half of an object, and a Pod's status carries every
container's image and ids), so each index keeps a compact copy instead: for owned objects everything the drift
comparison may look at (metadata without managedFields, spec, and for Deployments the replica counts of their
status), for pods what status and hardware fallback read, for SLMDeployments what validation, rendering and
status read (without the copies of the whole manifest that kubectl and kopf keep in annotations).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from slm_operator.api.resource import GROUP
from slm_operator.render.meta import ACCELERATOR_ANNOTATION

__all__ = ["Kept", "KeptSLM", "canonical", "compact_owned", "compact_pod", "compact_slm", "keep", "keep_slm"]

_META = ("name", "namespace", "uid", "generation", "resourceVersion", "creationTimestamp", "deletionTimestamp")
_DEPLOYMENT_STATUS = ("replicas", "readyReplicas", "updatedReplicas", "availableReplicas", "observedGeneration")
_POD_STATUS = ("phase", "conditions", "initContainerStatuses", "containerStatuses")
_CONTAINER_STATUS = ("name", "ready", "state", "lastState", "restartCount")
# Copies of a whole manifest that other tools keep in annotations; nothing the operator reads.
_BULKY_ANNOTATIONS = frozenset(
    {"kubectl.kubernetes.io/last-applied-configuration", f"{GROUP}/last-handled-configuration"}
)


def _meta(meta: Mapping[str, Any], *, labels: bool = True, annotations: bool = True) -> dict[str, Any]:
    kept = {k: meta[k] for k in _META if k in meta}
    if labels and meta.get("labels"):
        kept["labels"] = dict(meta["labels"])
    if annotations and meta.get("annotations"):
        kept["annotations"] = {k: v for k, v in meta["annotations"].items() if k not in _BULKY_ANNOTATIONS}
    if meta.get("ownerReferences"):
        kept["ownerReferences"] = [dict(ref) for ref in meta["ownerReferences"]]
    return kept


def compact_owned(body: Mapping[str, Any]) -> dict[str, Any]:
    """An owned object without managedFields or status (a Deployment keeps its replica counts)."""
    kept: dict[str, Any] = {k: v for k, v in body.items() if k not in ("metadata", "status")}
    kept["metadata"] = _meta(body.get("metadata") or {})
    if body.get("kind") == "Deployment":
        status = body.get("status") or {}
        kept["status"] = {k: status[k] for k in _DEPLOYMENT_STATUS if k in status}
    return kept


def compact_pod(body: Mapping[str, Any]) -> dict[str, Any]:
    """A model-server pod as status (controller/status.py) and hardware fallback (controller/fallback.py) read it."""
    meta = body.get("metadata") or {}
    kept_meta = {k: meta[k] for k in _META if k in meta}
    accelerator = (meta.get("annotations") or {}).get(ACCELERATOR_ANNOTATION)
    if accelerator is not None:
        kept_meta["annotations"] = {ACCELERATOR_ANNOTATION: accelerator}
    status = body.get("status") or {}
    kept_status: dict[str, Any] = {}
    for key in _POD_STATUS:
        if key in ("initContainerStatuses", "containerStatuses") and status.get(key):
            kept_status[key] = [{k: s[k] for k in _CONTAINER_STATUS if k in s} for s in status[key]]
        elif key in status:
            kept_status[key] = status[key]
    node = (body.get("spec") or {}).get("nodeName")
    return {"metadata": kept_meta, "spec": {"nodeName": node} if node else {}, "status": kept_status}


def compact_slm(body: Mapping[str, Any]) -> dict[str, Any]:
    """An SLMDeployment without managedFields and the manifest copies in its annotations."""
    kept: dict[str, Any] = {k: v for k, v in body.items() if k != "metadata"}
    kept["metadata"] = _meta(body.get("metadata") or {})
    return kept


def canonical(value: Any) -> str:
    """``value`` as compact JSON text with sorted keys: equal values give equal text."""
    return msgspec.json.encode(value, order="sorted").decode()


def _text(value: Any) -> str:
    """A record's body as compact JSON text (an owned object's spec may still be the apiserver's text: decode.py)."""
    return msgspec.json.encode(value).decode()


def _decoded(text: str) -> dict[str, Any]:
    decoded: dict[str, Any] = msgspec.json.decode(text)
    return decoded


def _unschedulable(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "PodScheduled" and c.get("reason") == "Unschedulable"
        for c in (pod.get("status") or {}).get("conditions") or []
    )


@dataclass(frozen=True, slots=True, eq=False)
class Kept:
    """An owned object or pod as an index keeps it: what every resync compares (name, resourceVersion, whether a
    pod is unschedulable) as plain fields, and the compact body as JSON text, decoded only by a reconcile of its
    SLMDeployment. JSON text is several times smaller than the same body as Python dicts and strings (a compact
    Deployment: about 4 KiB of text against 28 KiB of objects), and nothing reads it between reconciles."""

    name: str
    version: str
    created: str
    unschedulable: bool
    data: str

    def body(self) -> dict[str, Any]:
        return _decoded(self.data)


@dataclass(frozen=True, slots=True, eq=False)
class KeptSLM:
    """An SLMDeployment as its index keeps it: what the resync compares (its inputs from metadata, the phase, the
    status as canonical JSON) and the compact body without status as JSON text."""

    name: str
    version: str
    created: str
    deleting: bool
    meta_inputs: Hashable  # (uid, generation, labels, annotations)
    phase: str
    status: str  # canonical(status)
    data: str

    def body(self) -> dict[str, Any]:
        decoded = _decoded(self.data)
        decoded["status"] = _decoded(self.status)
        return decoded


def _fields(meta: Mapping[str, Any]) -> tuple[str, str, str]:
    return str(meta.get("name", "")), str(meta.get("resourceVersion", "")), str(meta.get("creationTimestamp", ""))


def keep(body: Mapping[str, Any], *, pod: bool = False) -> Kept:
    """The index record of an owned object (``pod``: of a model-server pod)."""
    kept = compact_pod(body) if pod else compact_owned(body)
    unschedulable = pod and _unschedulable(body)
    return Kept(*_fields(kept["metadata"]), unschedulable, _text(kept))


def keep_slm(body: Mapping[str, Any]) -> KeptSLM:
    """The index record of an SLMDeployment."""
    kept = compact_slm(body)
    meta = kept["metadata"]
    status = kept.pop("status", None) or {}
    meta_inputs = (
        meta.get("uid"),
        meta.get("generation"),
        tuple(sorted((meta.get("labels") or {}).items())),
        tuple(sorted((meta.get("annotations") or {}).items())),
    )
    return KeptSLM(
        *_fields(meta),
        deleting=bool(meta.get("deletionTimestamp")),
        meta_inputs=meta_inputs,
        phase=str(status.get("phase") or "Pending"),
        status=canonical(status),
        data=_text(kept),
    )
