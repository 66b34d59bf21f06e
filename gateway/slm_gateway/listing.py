"""The listing answers, built from the catalog: OpenAI's /v1/models, Ollama's /api/tags and /api/ps.

Models are named by their gateway id (``namespace/name``), the name a request uses. The shapes are the
runtime's (slm_runtime.openai.serving, slm_runtime.ollama.serving), filled from the SLMDeployment's status.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from slm_gateway.catalog import Model

__all__ = ["model_card", "ollama_ps", "ollama_tags", "openai_models"]

OWNED_BY = "slm-operator"
_FAR_FUTURE = "2125-01-01T00:00:00Z"  # Ollama's expires_at of a model that never unloads


def _created(model: Model) -> datetime:
    try:
        return datetime.fromisoformat(model.created.replace("Z", "+00:00"))
    except ValueError:
        return datetime.fromtimestamp(0, UTC)


def _rfc3339(model: Model) -> str:
    return _created(model).isoformat().replace("+00:00", "Z")


def model_card(model: Model) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": int(_created(model).timestamp()), "owned_by": OWNED_BY}


def openai_models(models: Iterable[Model]) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(m) for m in models]}


def _details(model: Model) -> dict[str, Any]:
    return {
        "parent_model": "",
        "format": model.format,
        "family": "",
        "families": None,
        "parameter_size": "",
        "quantization_level": "",
    }


def _tag(model: Model) -> dict[str, Any]:
    return {
        "name": model.id,
        "model": model.id,
        "modified_at": _rfc3339(model),
        "size": model.size_bytes,
        "digest": model.digest.removeprefix("sha256:"),
        "details": _details(model),
    }


def ollama_tags(models: Iterable[Model]) -> dict[str, Any]:
    return {"models": [_tag(m) for m in models]}


def ollama_ps(models: Iterable[Model]) -> dict[str, Any]:
    """The models with a ready pod (Ollama's "loaded" models)."""
    return {"models": [{**_tag(m), "expires_at": _FAR_FUTURE, "size_vram": 0} for m in models]}
