"""The machine-readable result of a pull and its on-disk record (``<file>.slm.json`` next to the model).

The JSON uses camelCase, like the SLMDeployment API, so the operator can copy ``source``, ``digest`` and
``sizeBytes`` into ``status.model`` as they are.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

__all__ = ["RECORD_SUFFIX", "ModelMetadata", "PulledModel", "read_record", "record_path", "write_record"]

RECORD_SUFFIX = ".slm.json"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)


class ModelMetadata(_Camel):
    """Serving defaults that travel with the model (an Ollama model's template, system and params layers)."""

    template: str | None = Field(default=None, description="Prompt template (Ollama Go template syntax)")
    system: str | None = Field(default=None, description="Default system prompt")
    parameters: dict[str, Any] = Field(default_factory=dict, description="Default sampling parameters")
    license: str | None = Field(default=None, description="License text shipped with the model")


class PulledModel(_Camel):
    """A model present in the cache, complete and verified."""

    path: str = Field(description="Absolute path to pass to `slm-runtime serve --model`")
    source: str = Field(description="The source URI as given")
    digest: str = Field(description="'sha256:<hex>' of the model file", pattern=r"^sha256:[0-9a-f]{64}$")
    size_bytes: int = Field(ge=0, description="Size of the model file in bytes")
    format: str | None = Field(default=None, description="'gguf' or 'onnx'; None when it cannot be told")
    metadata: ModelMetadata = Field(default_factory=ModelMetadata)
    cached: bool = Field(default=False, description="True when this pull found the model cached (no network)")

    @property
    def sha256(self) -> str:
        """The hex digest without its 'sha256:' prefix."""
        return self.digest.removeprefix("sha256:")

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2)


def record_path(model_file: Path) -> Path:
    """Where the record of ``model_file`` lives: ``<file>.slm.json`` beside it."""
    return model_file.with_name(model_file.name + RECORD_SUFFIX)


def read_record(path: Path) -> PulledModel | None:
    """The record at ``path``, or None when it is missing or unreadable (then the model is pulled again)."""
    try:
        return PulledModel.model_validate_json(path.read_bytes())
    except (OSError, ValidationError):
        return None


def write_record(path: Path, model: PulledModel) -> None:
    """Write the record atomically (temporary file, fsync, rename) so readers never see half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as out:
        out.write(model.model_copy(update={"cached": False}).to_json() + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
