"""Where each source lives in the cache (pure path arithmetic, no I/O).

Layout under DEST (the cache volume the operator mounts, or ``~/.cache/slm-operator/models``)::

    DEST/ollama/<namespace>/<name>/<tag>/model.gguf        the model layer (GGUF blob)
    DEST/ollama/<namespace>/<name>/<tag>/manifest.json     the registry manifest it came from
    DEST/hf/<org>/<repo>/<revision|main>/<path in repo>
    DEST/https/<host>/<url path>                           (http/ likewise; ':' in host[:port] -> '_')
    DEST/package/<distribution>/<version>/<model file>     assembled from the package's chunks
    DEST/file/<absolute path>.slm.json                     record only: file:// models are used in place
    DEST/pvc/<claim>/<path>.slm.json                       record only: the claim is mounted at --pvc-root

Next to every model file (or folder) ``F``: ``F.slm.json`` (the PulledModel record, written last, so its
presence means complete and verified); while pulling, ``F.partial`` (bytes so far; a folder for hf://
folders) and ``F.partial.validator`` (the ETag/Last-Modified guarding a resume); and ``F.lock`` (the
coordination lock, left in place on purpose). The path depends only on the source, so a cached model is
found without the network (``--offline``). Ollama blobs shared by several tags are hard links to one file.
"""

from __future__ import annotations

from pathlib import Path

from slm_runtime.source import ModelSource, SourceScheme

__all__ = ["OLLAMA_MODEL_FILE", "cache_path", "lock_path", "package_path", "safe_parts"]

OLLAMA_MODEL_FILE = "model.gguf"


def safe_parts(path: str) -> list[str]:
    """The components of ``path`` without empty, '.' and '..' ones, so no source escapes DEST."""
    return [part for part in path.split("/") if part not in ("", ".", "..")]


def cache_path(source: ModelSource, dest: Path) -> Path:
    """Where ``source`` is stored (or, for file:// and pvc://, where its record is kept) under ``dest``.

    package:// sources need the installed version: use ``package_path``.
    """
    scheme = source.scheme
    if scheme is SourceScheme.OLLAMA:
        return dest.joinpath("ollama", source.namespace, source.name, source.tag, OLLAMA_MODEL_FILE)
    if scheme is SourceScheme.HF:
        org, repo = source.name.split("/", 1)
        return dest.joinpath("hf", org, repo, source.revision or "main", *safe_parts(source.path))
    if scheme in (SourceScheme.HTTPS, SourceScheme.HTTP):
        return dest.joinpath(scheme.value, source.host.replace(":", "_"), *safe_parts(source.path))
    if scheme is SourceScheme.FILE:
        return dest.joinpath("file", *safe_parts(source.path))
    if scheme is SourceScheme.PVC:
        return dest.joinpath("pvc", source.name, *safe_parts(source.path))
    raise ValueError(f"{source.raw}: package sources are laid out by package_path()")


def package_path(dest: Path, distribution: str, version: str, filename: str) -> Path:
    return dest.joinpath("package", distribution, version or "unknown", *safe_parts(filename))


def lock_path(model_file: Path) -> Path:
    return model_file.with_name(model_file.name + ".lock")
