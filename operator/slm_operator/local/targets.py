"""What `slm run/bench/show TARGET` names: a manifest file, a Modelfile, a model source URI or a cached name."""

from __future__ import annotations

from pathlib import Path

from slm_operator.api import API_VERSION, KIND, SLMDeployment, validate_manifest
from slm_operator.api.resource import name_for
from slm_operator.local.config import load_resource
from slm_operator.local.modelfile import modelfile_resource

__all__ = ["TargetError", "is_local_target", "is_modelfile", "resource_for_source", "resource_for_target"]


class TargetError(ValueError):
    """A target that is neither a file, a source URI nor a model in the cache."""


def resource_for_source(source: str, *, name: str | None = None) -> SLMDeployment:
    """An SLMDeployment serving ``source`` with every default (what `slm run ollama://...` means)."""
    document = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name_for(name or source.split("://", 1)[-1])},
        "spec": {"model": {"source": source, **({"name": name} if name else {})}},
    }
    return validate_manifest(document, source)


def is_local_target(target: str) -> bool:
    """A file or a model source URI: what runs on this machine even when a gateway is named (model names do not)."""
    return "://" in target or Path(target).is_file()


def is_modelfile(path: Path) -> bool:
    """Ollama's convention: the file is called Modelfile (or *.Modelfile / Modelfile.*)."""
    return "modelfile" in path.name.lower()


def resource_for_target(target: str, *, name: str | None = None) -> SLMDeployment:
    """Resolve a manifest path, a Modelfile path or a source URI; cached names are resolved by the caller."""
    path = Path(target)
    if path.is_file():
        if is_modelfile(path):
            return modelfile_resource(path.read_text(encoding="utf-8"), name=name, base_dir=path.parent)
        return load_resource(path, name)
    if "://" in target:
        return resource_for_source(target)
    raise TargetError(f"'{target}' is not a file, a model source (ollama://, hf://, package:// ...) or a cached model")
