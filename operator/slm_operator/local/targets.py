"""What `slm run/bench/show TARGET` names: a manifest file, a Modelfile, a model source URI or a cached name."""

from __future__ import annotations

import re
from pathlib import Path

from slm_operator.api import SLMDeployment, validate_manifest

__all__ = ["TargetError", "dns_name", "is_modelfile", "resource_for_source", "resource_for_target"]


class TargetError(ValueError):
    """A target that is neither a file, a source URI nor a model in the cache."""


def dns_name(text: str) -> str:
    """A metadata.name from any model name: 'qwen2.5:3b' -> 'qwen2-5-3b'."""
    name = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")
    return name or "model"


def resource_for_source(source: str, *, name: str | None = None) -> SLMDeployment:
    """An SLMDeployment serving ``source`` with every default (what `slm run ollama://...` means)."""
    document = {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"name": dns_name(name or source.split("://", 1)[-1])},
        "spec": {"model": {"source": source, **({"name": name} if name else {})}},
    }
    return validate_manifest(document, source)


def is_modelfile(path: Path) -> bool:
    """Ollama's convention: the file is called Modelfile (or *.Modelfile / Modelfile.*)."""
    return "modelfile" in path.name.lower()


def resource_for_target(target: str, *, name: str | None = None) -> SLMDeployment:
    """Resolve a manifest path, a Modelfile path or a source URI; cached names are resolved by the caller."""
    from slm_operator.local.config import load_resource
    from slm_operator.local.modelfile import modelfile_resource

    path = Path(target)
    if path.is_file():
        if is_modelfile(path):
            return modelfile_resource(path.read_text(encoding="utf-8"), name=name, base_dir=path.parent)
        return load_resource(path, name)
    if "://" in target:
        return resource_for_source(target)
    raise TargetError(f"'{target}' is not a file, a model source (ollama://, hf://, package:// ...) or a cached model")
