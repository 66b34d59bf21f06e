"""Ollama Modelfiles turned into SLMDeployment manifests (`slm import`).

Instruction mapping (names are case-insensitive, as in Ollama):

=================  ============================================================================================
FROM               spec.model.source: ``name[:tag]`` -> ``ollama://name[:tag]``, a ``.gguf`` path (relative to
                   the Modelfile) -> ``file:///absolute/path``, a URI (hf://, https://, package:// ...) as is
PARAMETER          spec.parameters: temperature, top_p, top_k, min_p, num_ctx or context_length (contextLength),
                   num_predict,
                   repeat_penalty, repeat_last_n, presence_penalty, frequency_penalty, seed, stop (repeatable),
                   num_thread, num_batch
PARAMETER num_gpu  spec.hardware: 0 -> accelerator cpu; any other value -> accelerator nvidia-gpu with fallback
                   [cpu] (the GPU profile offloads every layer; a partial layer count has no equivalent)
SYSTEM             spec.system
TEMPLATE           spec.template (Ollama Go-template syntax, as the runtime reads it)
LICENSE            metadata.annotations["slm-operator.io/license"] (repeated LICENSE lines are joined)
MESSAGE            spec.messages (roles system, user, assistant)
REQUIRES           ignored with a note (the runtime is not Ollama)
ADAPTER            an error naming the line: LoRA adapters are not supported; merge the adapter first
=================  ============================================================================================

Ollama-only sampling parameters without an engine equivalent (mirostat, tfs_z, typical_p, num_keep ...) are
dropped with a note naming their line; an unknown parameter is an error naming its line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from slm_operator.api import API_VERSION, KIND, Parameters, SLMDeployment, validate_manifest
from slm_operator.api.resource import name_for

__all__ = [
    "LICENSE_ANNOTATION",
    "Import",
    "Instruction",
    "ModelfileError",
    "import_modelfile",
    "manifest_yaml",
    "modelfile_resource",
    "parse_modelfile",
    "to_modelfile",
]

LICENSE_ANNOTATION = "slm-operator.io/license"

_INSTRUCTIONS = frozenset({"FROM", "PARAMETER", "SYSTEM", "TEMPLATE", "LICENSE", "MESSAGE", "ADAPTER", "REQUIRES"})

# Modelfile PARAMETER -> spec.parameters field
_PARAMETERS = {
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "min_p": "min_p",
    "num_ctx": "context_length",
    "context_length": "context_length",  # not Ollama's name, but Modelfiles in the wild use it
    "num_predict": "num_predict",
    "repeat_penalty": "repeat_penalty",
    "repeat_last_n": "repeat_last_n",
    "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
    "seed": "seed",
    "stop": "stop",
    "num_thread": "num_thread",
    "num_batch": "num_batch",
}
# Ollama parameters accepted by Ollama but without an equivalent here: dropped with a note
_DROPPED = frozenset(
    {
        "mirostat",
        "mirostat_eta",
        "mirostat_tau",
        "tfs_z",
        "typical_p",
        "num_keep",
        "penalize_newline",
        "use_mmap",
        "use_mlock",
        "numa",
        "low_vram",
        "f16_kv",
        "vocab_only",
        "main_gpu",
        "num_gqa",
        "logits_all",
    }
)
_ROLES = ("system", "user", "assistant")


class ModelfileError(ValueError):
    """A Modelfile that cannot be imported; the message names the line and the fix."""

    def __init__(self, line: int, message: str) -> None:
        self.line = line
        super().__init__(f"line {line}: {message}")


@dataclass(frozen=True)
class Instruction:
    """One instruction: its upper-case keyword, its (unquoted) argument text and the line it starts on."""

    keyword: str
    value: str
    line: int


def _unquote(text: str, lines: list[str], index: int, line_no: int) -> tuple[str, int]:
    """The value starting in ``text`` (rest of line ``index``); ``\"\"\"`` values may span lines."""
    if text.startswith('"""'):
        body = text[3:]
        if '"""' in body:
            return body[: body.index('"""')], index
        parts = [body]
        for follow in range(index + 1, len(lines)):
            if '"""' in lines[follow]:
                parts.append(lines[follow][: lines[follow].index('"""')])
                return "\n".join(parts), follow
            parts.append(lines[follow])
        raise ModelfileError(line_no, 'a """ quoted value is never closed; end it with """')
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"\s*$', text)
        if not match:
            raise ModelfileError(line_no, 'a quoted value is never closed; end it with " (or use """ for text)')
        return re.sub(r"\\(.)", r"\1", match.group(1)), index
    return text.strip(), index


def parse_modelfile(text: str) -> list[Instruction]:
    """Instructions in file order; comments (#) and blank lines skipped. Unknown keywords are errors."""
    lines = text.splitlines()
    out: list[Instruction] = []
    index = 0
    while index < len(lines):
        line_no = index + 1
        stripped = lines[index].strip()
        if not stripped or stripped.startswith("#"):
            index += 1
            continue
        keyword, _, rest = stripped.partition(" ")
        if "\t" in keyword:
            keyword, _, tail = keyword.partition("\t")
            rest = f"{tail} {rest}".strip()
        upper = keyword.upper()
        if upper not in _INSTRUCTIONS:
            raise ModelfileError(
                line_no, f"unknown instruction '{keyword}'; a Modelfile has " + ", ".join(sorted(_INSTRUCTIONS))
            )
        rest = rest.strip()
        if upper in ("PARAMETER", "MESSAGE"):
            name, _, tail = rest.partition(" ")
            value, index = _unquote(tail.strip(), lines, index, line_no)
            out.append(Instruction(upper, f"{name} {value}", line_no))
        else:
            value, index = _unquote(rest, lines, index, line_no)
            out.append(Instruction(upper, value, line_no))
        index += 1
    return out


def _source(reference: str, base_dir: Path, line: int) -> str:
    if not reference:
        raise ModelfileError(
            line, "FROM needs a model: FROM qwen2.5:3b, FROM ./model.gguf or FROM hf://org/repo/f.gguf"
        )
    if "://" in reference:
        return reference
    if reference.startswith("hf.co/") or reference.startswith("huggingface.co/"):
        raise ModelfileError(
            line,
            f"FROM {reference}: name the GGUF file instead, as hf://org/repo/file.gguf (Hugging Face references "
            "by quantization tag are resolved by Ollama's registry only)",
        )
    looks_like_path = reference.startswith((".", "/", "~")) or reference.lower().endswith((".gguf", ".onnx"))
    if looks_like_path:
        path = Path(reference).expanduser()
        path = path if path.is_absolute() else (base_dir / path)
        if path.is_dir() and not (path / "genai_config.json").exists():
            raise ModelfileError(
                line,
                f"FROM {reference}: a folder of safetensors weights cannot be served; convert it to GGUF "
                "(llama.cpp's convert_hf_to_gguf.py) and point FROM at the .gguf file",
            )
        return "file://" + str(path.resolve())
    return "ollama://" + reference


def _parameter_value(name: str, raw: str, line: int) -> Any:
    target = _PARAMETERS[name]
    if target == "stop":
        return raw
    annotation = Parameters.model_fields[target].annotation
    as_int = annotation is not None and "int" in str(annotation) and "float" not in str(annotation)
    try:
        value: Any = int(raw) if as_int else float(raw)
    except ValueError:
        kind = "a whole number" if as_int else "a number"
        raise ModelfileError(line, f"PARAMETER {name} {raw}: expected {kind}") from None
    try:
        Parameters.model_validate({target: value})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise ModelfileError(line, f"PARAMETER {name} {raw}: {reason}") from None
    return value


@dataclass
class Import:
    """The result of an import: the manifest document, and notes about what was dropped."""

    document: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def resource(self) -> SLMDeployment:
        return validate_manifest(self.document, "Modelfile")


def _hardware(raw: str, line: int) -> dict[str, Any]:
    try:
        layers = int(raw)
    except ValueError:
        raise ModelfileError(line, f"PARAMETER num_gpu {raw}: expected a whole number of layers") from None
    if layers == 0:
        return {"accelerator": "cpu"}
    return {"accelerator": "nvidia-gpu", "fallback": ["cpu"]}


def import_modelfile(text: str, *, name: str | None = None, base_dir: Path | None = None) -> Import:
    """Convert a Modelfile into an SLMDeployment document; raises ModelfileError.

    ``name``: metadata.name (default: from the FROM model, 'qwen2.5:3b' -> 'qwen2-5-3b'); ``base_dir``: where
    relative FROM paths start (default: the working directory).
    """
    base = base_dir or Path.cwd()
    spec: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    licenses: list[str] = []
    messages: list[dict[str, str]] = []
    notes: list[str] = []
    source: str | None = None
    for item in parse_modelfile(text):
        if item.keyword == "FROM":
            if source is not None:
                raise ModelfileError(item.line, "FROM appears twice; a Modelfile names one model")
            source = _source(item.value, base, item.line)
        elif item.keyword == "ADAPTER":
            raise ModelfileError(
                item.line,
                "ADAPTER is not supported: slm-operator serves one model file; merge the LoRA adapter into the "
                "base model (llama.cpp's llama-export-lora) and point FROM at the merged GGUF",
            )
        elif item.keyword == "REQUIRES":
            notes.append(f"line {item.line}: REQUIRES {item.value} ignored (it pins an Ollama version)")
        elif item.keyword == "SYSTEM":
            spec["system"] = item.value
        elif item.keyword == "TEMPLATE":
            spec["template"] = item.value
        elif item.keyword == "LICENSE":
            licenses.append(item.value)
        elif item.keyword == "MESSAGE":
            role, _, content = item.value.partition(" ")
            if role.lower() not in _ROLES:
                raise ModelfileError(item.line, f"MESSAGE role '{role}' is not one of {', '.join(_ROLES)}")
            messages.append({"role": role.lower(), "content": content})
        else:
            _parameter(item, parameters, spec, notes)
    if source is None:
        raise ModelfileError(1, "no FROM instruction; add FROM <model> (e.g. FROM qwen2.5:3b)")
    model: dict[str, Any] = {"source": source}
    if source.startswith("ollama://"):
        model["name"] = source.removeprefix("ollama://")
    spec = {"model": model, **spec}
    if parameters:
        spec["parameters"] = parameters
    if messages:
        spec["messages"] = messages
    metadata: dict[str, Any] = {"name": name or name_for(model.get("name") or Path(source).stem)}
    if licenses:
        metadata["annotations"] = {LICENSE_ANNOTATION: "\n".join(licenses)}
    document = {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}
    return Import(document=document, notes=notes)


def _parameter(item: Instruction, parameters: dict[str, Any], spec: dict[str, Any], notes: list[str]) -> None:
    key, _, raw = item.value.partition(" ")
    key = key.lower()
    if not raw:
        raise ModelfileError(item.line, f"PARAMETER {key} needs a value: PARAMETER {key} <value>")
    if key == "num_gpu":
        spec["hardware"] = _hardware(raw, item.line)
    elif key in _DROPPED:
        notes.append(f"line {item.line}: PARAMETER {key} dropped (no equivalent in the llama.cpp runtime)")
    elif key not in _PARAMETERS:
        known = ", ".join(sorted({*_PARAMETERS, "num_gpu"}))
        raise ModelfileError(item.line, f"unknown PARAMETER '{key}'; supported: {known}")
    elif key == "stop":
        parameters.setdefault("stop", []).append(raw)
    else:
        field_name = _PARAMETERS[key]
        camel = Parameters.model_fields[field_name].alias or field_name
        parameters[camel] = _parameter_value(key, raw, item.line)


def modelfile_resource(text: str, *, name: str | None = None, base_dir: Path | None = None) -> SLMDeployment:
    """The validated SLMDeployment of a Modelfile (ManifestError if the result breaks an API rule)."""
    return import_modelfile(text, name=name, base_dir=base_dir).resource()


def manifest_yaml(result: Import, *, origin: str = "") -> str:
    """The manifest as YAML, with a header saying where it came from; validated first."""
    result.resource()
    header = f"# Imported from {origin} by `slm import`.\n" if origin else ""
    body = yaml.safe_dump(result.document, sort_keys=False, allow_unicode=True, width=120)
    return header + body


def _quoted(text: str) -> str:
    return f'"""{text}"""' if ("\n" in text or '"' in text or not text.strip()) else text


def to_modelfile(resource: SLMDeployment) -> str:
    """The Modelfile equivalent of a manifest (what `slm show --modelfile` prints); the inverse of the import."""
    spec = resource.spec
    source = spec.model.source
    lines = [f"FROM {source.removeprefix('ollama://') if source.startswith('ollama://') else source}"]
    if spec.template is not None:
        lines.append(f"TEMPLATE {_quoted(spec.template)}")
    if spec.system is not None:
        lines.append(f"SYSTEM {_quoted(spec.system)}")
    inverse = {field_name: key for key, field_name in reversed(_PARAMETERS.items())}
    if spec.parameters is not None:
        for field_name, value in spec.parameters.model_dump(exclude_none=True).items():
            values = value if isinstance(value, list) else [value]
            lines += [
                f"PARAMETER {inverse[field_name]} {_quoted(str(v)) if field_name == 'stop' else v}" for v in values
            ]
    if spec.hardware is not None:
        lines.append(f"PARAMETER num_gpu {0 if spec.hardware.accelerator.value == 'cpu' else -1}")
    for message in spec.messages or []:
        lines.append(f"MESSAGE {message.role} {_quoted(message.content)}")
    license_text = (resource.metadata.annotations or {}).get(LICENSE_ANNOTATION)
    if license_text:
        lines.append(f"LICENSE {_quoted(license_text)}")
    return "\n".join(lines) + "\n"
