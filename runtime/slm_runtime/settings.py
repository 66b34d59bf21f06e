"""Runtime settings: pydantic models split by concern, the source of the `serve` flags and SLM_* variables.

Every field of every section becomes one command-line flag (``--max-queue``) and one environment variable
(``SLM_MAX_QUEUE``); field names are unique across sections so that the flat namespace stays unambiguous.
Precedence, highest first: flag, environment variable, the model metadata file (``--model-metadata``, the JSON
the fetcher writes next to a pulled model: ``{"template", "system", "parameters"}``), the field default.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo

from slm_runtime.fetch.result import record_path
from slm_runtime.formats import Engine, ModelFormat

__all__ = [
    "ENV_PREFIX",
    "PARAMETER_ALIASES",
    "SECTIONS",
    "EngineName",
    "EngineSettings",
    "ExecutionProvider",
    "ModelFormat",
    "ModelSettings",
    "PresetMessage",
    "RuntimeSettings",
    "SamplingDefaults",
    "ServerSettings",
    "SettingsError",
    "canonical_model_name",
    "env_name",
    "field_info",
    "flag_name",
    "load_metadata",
    "metadata_overrides",
    "parameter_field",
    "parse_messages",
    "settings_from_sources",
]

ENV_PREFIX = "SLM_"

EngineName = Engine
ExecutionProvider = str


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the flag or variable and the fix."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerSettings(_Section):
    """The HTTP server: where it listens, how many generations run at once, limits and security."""

    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 in a pod).")
    port: int = Field(11434, ge=1, le=65535, description="TCP port to listen on (Ollama's 11434 by default).")
    parallel: int = Field(
        1,
        ge=1,
        le=256,
        description="Generations that run at the same time (slots); llama.cpp decodes them together in one batch.",
    )
    max_queue: int = Field(
        64,
        ge=0,
        le=100_000,
        description="Requests that may wait for a slot; beyond it requests get HTTP 503.",
    )
    request_timeout: float = Field(
        600.0, gt=0, description="Seconds a request may take, queueing included, before it is stopped."
    )
    drain_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds to finish the requests in flight after SIGTERM (not ready, nothing new admitted) "
        "before exiting.",
    )
    termination_log: Path | None = Field(
        None,
        description="File that gets the reason when serve exits on a failure (a pod's /dev/termination-log).",
    )
    api_key: SecretStr | None = Field(
        None, description="Bearer token required on every route but health and metrics; unset: no auth."
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted; larger bodies get HTTP 413."
    )
    log_prompts: bool = Field(False, description="Write prompt text into the access log (off: only counts).")
    honour_keep_alive: bool = Field(
        True,
        description="Unload the model when a request's keep_alive says so, as Ollama does. Off: requests' "
        "keep_alive is ignored and the model stays loaded while the server runs (the operator turns it off in "
        "pods, where scaling, down to zero, frees a model's memory).",
    )


class PresetMessage(_Section):
    """A message placed before every conversation (Ollama's Modelfile MESSAGE)."""

    role: Literal["system", "user", "assistant"] = Field(description="Who speaks: system, user or assistant.")
    content: str = Field(description="The message text.")


class ModelSettings(_Section):
    """The model to serve and how it is presented to clients."""

    model: Path = Field(
        description="Path of the model: a .gguf file or an onnxruntime-genai folder; default: where `pull` "
        "put --model-source in --model-cache."
    )
    model_source: str | None = Field(
        None, description="Source URI the init container pulled (ollama://, hf://, https://, pvc://, file://)."
    )
    model_cache: Path | None = Field(
        None, description="Cache folder `pull` wrote to (its --dest); default: $SLM_CACHE_HOME/models."
    )
    model_sha256: str | None = Field(
        None, description="Pinned sha256 of the model: serving refuses a cached model with another digest."
    )
    model_metadata: Path | None = Field(
        None,
        description='JSON with {"template", "system", "parameters"} defaults, or a pull record; default: '
        "MODEL.slm.json when `pull` left one beside the model.",
    )
    model_name: str | None = Field(
        None, min_length=1, description="Name clients use in requests; default: the file or folder name."
    )
    model_format: ModelFormat | None = Field(None, description="gguf or onnx; inferred from the path when unset.")
    model_digest: str | None = Field(
        None, description="sha256 digest of the model, reported in /api/tags and the model info metric."
    )
    template: str | None = Field(
        None, description="Prompt template (Ollama TEMPLATE syntax); default: the model's own chat template."
    )
    system: str | None = Field(None, description="Default system prompt (Ollama SYSTEM).")
    messages: tuple[PresetMessage, ...] = Field(
        (),
        description="Messages placed before every conversation, chats and a generate request's first turn (Ollama "
        'MESSAGE): a JSON list of {"role", "content"} objects, roles system, user or assistant.',
    )
    context_length: int | None = Field(
        None,
        ge=64,
        description="Context window of each slot in tokens (num_ctx); default: min(4096, the model's).",
    )


class EngineSettings(_Section):
    """The inference engine and the hardware it runs on."""

    engine: EngineName | None = Field(None, description="llama-cpp or onnxruntime-genai; default from format.")
    threads: int | None = Field(None, ge=1, le=1024, description="CPU threads (num_thread); default: all cores.")
    batch_size: int = Field(512, ge=1, le=65536, description="Prompt tokens evaluated per batch (num_batch).")
    gpu_layers: int = Field(0, ge=-1, description="Layers offloaded to a GPU by llama.cpp (-1: all).")
    execution_provider: ExecutionProvider = Field(
        "cpu",
        pattern=r"^[A-Za-z][A-Za-z0-9_-]*$",
        description="onnxruntime-genai execution provider: cpu, cuda, rocm, dml, qnn, openvino, webgpu.",
    )
    embeddings: bool = Field(True, description="Serve the embedding endpoints when the engine supports them.")
    batch_invariant: bool = Field(
        True,
        description="Keep each generation's arithmetic independent of what else is decoded with it (llama.cpp): "
        "greedy output is then the same under any load. false: repacked weights and flash attention, faster "
        "under concurrency, but output may vary with load.",
    )
    prompt_cache: bool = Field(
        True,
        description="Reuse the KV cache of the longest matching prompt prefix any slot holds (llama.cpp): "
        "multi-turn chat and shared system prompts skip re-reading it (docs/batching.md, Prompt cache).",
    )


class SamplingDefaults(_Section):
    """Default sampling options (Ollama Modelfile PARAMETER equivalents); requests override them."""

    temperature: float = Field(0.8, ge=0, le=5, description="Sampling temperature; 0 is greedy.")
    top_k: int = Field(40, ge=0, description="Keep the k most likely tokens (0: all).")
    top_p: float = Field(0.9, gt=0, le=1, description="Nucleus sampling probability mass.")
    min_p: float = Field(0.0, ge=0, le=1, description="Drop tokens below min_p times the top probability.")
    repeat_penalty: float = Field(1.1, ge=0, description="Penalty for repeated tokens (1: none).")
    repeat_last_n: int = Field(64, ge=-1, description="Tokens looked back for repeat_penalty (-1: context).")
    presence_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty for tokens already present.")
    frequency_penalty: float = Field(0.0, ge=-2, le=2, description="Penalty proportional to token frequency.")
    seed: int | None = Field(None, description="Random seed; unset: a fresh seed per request.")
    num_predict: int = Field(-1, ge=-1, description="Most tokens generated per request (-1: until the context).")
    stop: tuple[str, ...] = Field((), description="Stop sequences (JSON list in the environment).")


class RuntimeSettings(BaseModel):
    """Everything `slm-runtime serve` needs, one section per concern."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    server: ServerSettings = Field(default_factory=ServerSettings)
    model: ModelSettings
    engine: EngineSettings = Field(default_factory=EngineSettings)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)

    @property
    def served_name(self) -> str:
        """The model name clients use: --model-name, else the file name without .gguf."""
        if self.model.model_name:
            return self.model.model_name
        name = self.model.model.name
        return name[: -len(".gguf")] if name.lower().endswith(".gguf") else name

    @property
    def model_format(self) -> ModelFormat:
        if self.model.model_format is not None:
            return self.model.model_format
        if self.model.model.is_dir() or self.engine.engine is Engine.ONNXRUNTIME_GENAI:
            return ModelFormat.ONNX
        return ModelFormat.GGUF

    @property
    def engine_name(self) -> EngineName:
        if self.engine.engine is not None:
            return self.engine.engine
        return Engine.for_format(self.model_format)


SECTIONS: dict[str, type[_Section]] = {
    "server": ServerSettings,
    "model": ModelSettings,
    "engine": EngineSettings,
    "sampling": SamplingDefaults,
}


def flag_name(field: str) -> str:
    """``max_queue`` -> ``--max-queue``."""
    return "--" + field.replace("_", "-")


def env_name(field: str) -> str:
    """``max_queue`` -> ``SLM_MAX_QUEUE``."""
    return ENV_PREFIX + field.upper()


def _section_of(field: str) -> str:
    for section, model in SECTIONS.items():
        if field in model.model_fields:
            return section
    raise KeyError(field)


def parse_messages(source: str, raw: str) -> Any:
    """The JSON list of ``--messages`` / SLM_MESSAGES; SettingsError naming ``source`` when it is not JSON."""
    try:
        value = json.loads(raw) if raw.strip() else []
    except json.JSONDecodeError as exc:
        raise SettingsError(
            f'{source} is not JSON: give a list like [{{"role": "user", "content": "Hi"}}] ({exc})'
        ) from exc
    if not isinstance(value, list):
        raise SettingsError(f'{source} must be a JSON list of {{"role", "content"}} objects')
    return value


def _parse_env_value(field: str, raw: str) -> Any:
    if field == "messages":
        return parse_messages(env_name(field), raw)
    if field == "stop":
        stripped = raw.strip()
        if stripped.startswith("["):
            try:
                return json.loads(stripped)
            except json.JSONDecodeError as exc:
                raise SettingsError(f"{env_name(field)} is not a JSON list of strings: {exc}") from exc
        return [raw] if raw else []
    return raw


def load_metadata(path: Path) -> dict[str, Any]:
    """Read the model metadata JSON; raise SettingsError naming the file when it is unusable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"--model-metadata {path}: cannot read it ({exc.strerror})") from exc
    except json.JSONDecodeError as exc:
        raise SettingsError(f"--model-metadata {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise SettingsError(f"--model-metadata {path}: expected a JSON object")
    return data


#: Ollama PARAMETER names whose runtime field is named differently (num_ctx -> context_length ...).
PARAMETER_ALIASES = {
    "num_ctx": "context_length",
    "num_thread": "threads",
    "num_batch": "batch_size",
    "num_gpu": "gpu_layers",
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def parameter_field(name: str) -> str:
    """The runtime field a Modelfile PARAMETER (or spec.parameters key) sets: ``numThread`` -> ``threads``."""
    key = _snake(name)
    return PARAMETER_ALIASES.get(key, key)


def field_info(field: str) -> FieldInfo:
    """The pydantic field of ``field`` in whichever section holds it (its bounds, default, description)."""
    return SECTIONS[_section_of(field)].model_fields[field]


def canonical_model_name(name: str) -> str:
    """Ollama's canonical form of a model name: a name without a tag means ``:latest``."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def metadata_overrides(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Flat field values from a metadata object; unknown parameters are ignored (Ollama has many).

    Accepts ``{"template", "system", "parameters"}`` or the record `slm-runtime pull` writes beside a model
    (``<model>.slm.json``: ``{"digest", "format", "metadata": {...}}``), whose digest and format are used too.
    """
    values: dict[str, Any] = {}
    if isinstance(metadata.get("metadata"), Mapping):
        if isinstance(metadata.get("digest"), str):
            values["model_digest"] = metadata["digest"]
        if metadata.get("format") in tuple(ModelFormat):
            values["model_format"] = metadata["format"]
        metadata = metadata["metadata"]
    for key in ("template", "system"):
        if isinstance(metadata.get(key), str):
            values[key] = metadata[key]
    parameters = metadata.get("parameters") or {}
    if not isinstance(parameters, Mapping):
        raise SettingsError('model metadata "parameters" must be an object')
    for raw_key, value in parameters.items():
        key = parameter_field(str(raw_key))
        if key in SamplingDefaults.model_fields or key in {"context_length", "threads", "batch_size"}:
            values[key] = [value] if key == "stop" and isinstance(value, str) else value
    return values


def _resolve_source(flat: dict[str, Any], env: Mapping[str, str]) -> None:
    """Find the model `pull` fetched for ``model_source`` (never touching the network) and use its record."""
    from slm_runtime.fetch import cached, default_dest

    source = str(flat["model_source"])
    dest = Path(flat.get("model_cache") or default_dest(env))
    pin = flat.get("model_sha256")
    try:
        record = cached(source, dest, sha256=str(pin) if pin else None)
    except ValueError as exc:
        raise SettingsError(f"{flag_name('model_source')} / {env_name('model_source')}: {exc}") from exc
    if record is None:
        raise SettingsError(
            f"{source} is not in the cache {dest}"
            + (f" with digest {pin}" if pin else "")
            + f": run `slm-runtime pull {source} --dest {dest}` first (the init container does)"
        )
    flat["model"] = record.path
    for key, value in metadata_overrides(record.model_dump(by_alias=True)).items():
        flat.setdefault(key, value)


def settings_from_sources(flags: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> RuntimeSettings:
    """Build settings from parsed flags (only those given), the environment and the metadata file."""
    env = os.environ if environ is None else environ
    flat: dict[str, Any] = {}
    from_env: dict[str, Any] = {}
    for model in SECTIONS.values():
        for field in model.model_fields:
            name = env_name(field)
            if name in env:
                from_env[field] = _parse_env_value(field, env[name])
    flat.update(from_env)
    flat.update({k: v for k, v in flags.items() if v is not None})
    if "model" not in flat and flat.get("model_source"):
        _resolve_source(flat, env)
    if "model" not in flat:
        raise SettingsError(
            f"no model given: pass {flag_name('model')} PATH (or set {env_name('model')}), or "
            f"{flag_name('model_source')} URI with the {flag_name('model_cache')} that `pull` filled"
        )
    if flat.get("model_sha256") and not flat.get("model_digest"):
        flat["model_digest"] = "sha256:" + str(flat["model_sha256"]).removeprefix("sha256:")
    metadata_path = flat.get("model_metadata")
    if not metadata_path:
        beside = record_path(Path(str(flat["model"])))
        if beside.is_file():
            metadata_path = beside
    if metadata_path:
        for key, value in metadata_overrides(load_metadata(Path(metadata_path))).items():
            flat.setdefault(key, value)
    nested: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    for field, value in flat.items():
        nested[_section_of(field)][field] = value
    try:
        return RuntimeSettings.model_validate(nested)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [part for part in error["loc"] if isinstance(part, str)]
            field = loc[1] if len(loc) > 1 else (loc[0] if loc else "?")
            problems.append(f"{flag_name(field)} / {env_name(field)}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from exc
