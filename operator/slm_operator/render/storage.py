"""The PersistentVolumeClaim the operator creates when spec.cache asks for one."""

from __future__ import annotations

from typing import Any

from slm_operator.api.enums import CacheVolume
from slm_operator.api.resource import SLMDeployment
from slm_operator.render.meta import object_meta

__all__ = ["build_cache_claim", "cache_claim_name"]


def cache_claim_name(slm: SLMDeployment) -> str:
    """The claim pods mount: the user's existing one, or the one the operator creates."""
    cache = slm.spec.cache
    if cache and cache.claim_name:
        return cache.claim_name
    return f"{slm.metadata.name}-model-cache"


def build_cache_claim(slm: SLMDeployment) -> dict[str, Any] | None:
    """A ReadWriteMany claim shared by the replicas, or None when no claim is to be created."""
    cache = slm.spec.cache
    if not cache or cache.volume is not CacheVolume.PERSISTENT_VOLUME_CLAIM or cache.claim_name:
        return None
    spec: dict[str, Any] = {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": cache.size}}}
    if cache.storage_class_name:
        spec["storageClassName"] = cache.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": object_meta(slm, cache_claim_name(slm)),
        "spec": spec,
    }
