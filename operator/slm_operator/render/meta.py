"""Names, labels and owner references shared by every rendered object."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from slm_operator.api.resource import API_VERSION, KIND, SLMDeployment

__all__ = [
    "ACCELERATOR_ANNOTATION",
    "MANAGED_BY",
    "MODEL_DIGEST_ANNOTATION",
    "common_labels",
    "object_meta",
    "owner_reference",
    "selector_labels",
    "spec_digest",
]

MANAGED_BY = "slm-operator"
MODEL_DIGEST_ANNOTATION = "slm-operator.io/model-spec-digest"
ACCELERATOR_ANNOTATION = "slm-operator.io/accelerator"


def selector_labels(slm: SLMDeployment) -> dict[str, str]:
    """The labels that select this SLMDeployment's pods (immutable once a Deployment exists)."""
    return {"app.kubernetes.io/name": "slm-runtime", "app.kubernetes.io/instance": slm.metadata.name}


def common_labels(slm: SLMDeployment) -> dict[str, str]:
    return {
        **selector_labels(slm),
        "app.kubernetes.io/component": "model-server",
        "app.kubernetes.io/part-of": "slm-operator",
        "app.kubernetes.io/managed-by": MANAGED_BY,
    }


def owner_reference(slm: SLMDeployment) -> dict[str, Any] | None:
    """The controller reference to the SLMDeployment, or None when it has no uid (local rendering)."""
    uid = (slm.metadata.model_extra or {}).get("uid")
    if not uid:
        return None
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": slm.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def object_meta(slm: SLMDeployment, name: str | None = None, **extra: Any) -> dict[str, Any]:
    """metadata for an owned object: name, namespace, labels and the controller owner reference."""
    meta: dict[str, Any] = {"name": name or slm.metadata.name, "labels": common_labels(slm)}
    if slm.metadata.namespace:
        meta["namespace"] = slm.metadata.namespace
    owner = owner_reference(slm)
    if owner:
        meta["ownerReferences"] = [owner]
    meta.update(extra)
    return meta


def spec_digest(value: Any) -> str:
    """A short, stable digest of a JSON-able value (sorted keys), for change-detection annotations."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
