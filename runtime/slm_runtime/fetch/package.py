"""package://DISTRIBUTION[/file] sources: a model shipped inside an installed Python distribution.

The import module is the distribution name with '-' and '.' turned into '_'. What it may expose:

- ``chunk_paths()`` -> the model split into parts: they are concatenated into the cache, hashed on the way;
- ``assemble(output_path)`` -> used when there is no ``chunk_paths()``;
- ``MODEL_NAME`` (the file name in the cache) and ``EXPECTED_SHA256`` (verified, unless a pin is given).

``package://dist/some/file`` naming a file inside the package (not its ``MODEL_NAME``) uses that file in
place, like file://.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from types import ModuleType

from slm_runtime.source import ModelSource

from .digest import CHUNK_SIZE, hash_file, normalize_sha256
from .download import Downloaded, fsync_dir, partial_path
from .errors import DigestMismatchError, PullError, SourceNotFoundError
from .progress import NullProgress, Progress

__all__ = ["PackagePlan", "build_from_package", "module_name", "plan_package"]


def module_name(distribution: str) -> str:
    return distribution.replace("-", "_").replace(".", "_")


@dataclass(frozen=True)
class PackagePlan:
    distribution: str
    version: str
    filename: str
    expected_sha256: str | None = None
    chunks: list[Path] = field(default_factory=list)
    assemble: Callable[[Path], object] | None = None
    in_place: Path | None = None


def plan_package(source: ModelSource) -> PackagePlan:
    """Import the distribution's module and decide how to produce its model file."""
    dist = source.name
    module = _import(source)
    try:
        version = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        version = str(getattr(module, "__version__", "unknown"))
    model_name = getattr(module, "MODEL_NAME", None)
    pinned = getattr(module, "EXPECTED_SHA256", None)
    expected = normalize_sha256(pinned) if isinstance(pinned, str) else None
    wanted = source.path.strip("/")
    if wanted and wanted != model_name:
        resource = Path(str(files(module).joinpath(wanted)))
        return PackagePlan(distribution=dist, version=version, filename=wanted, in_place=resource)
    filename = str(model_name or f"{dist}.gguf")
    chunk_paths = getattr(module, "chunk_paths", None)
    if callable(chunk_paths):
        chunks = [Path(p) for p in chunk_paths()]
        return PackagePlan(dist, version, filename, expected, chunks=chunks)
    assemble = getattr(module, "assemble", None)
    if callable(assemble):
        return PackagePlan(dist, version, filename, expected, assemble=assemble)
    raise PullError(
        f"{source.raw}: module {module.__name__} exposes neither chunk_paths() nor assemble(); "
        f"name the model file inside it: package://{dist}/path/to/model.gguf"
    )


def _import(source: ModelSource) -> ModuleType:
    name = module_name(source.name)
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            raise
        raise SourceNotFoundError(
            f"{source.raw}: Python package '{source.name}' is not installed (module {name}); "
            f"install it into the runtime image: pip install {source.name}"
        ) from None


def build_from_package(
    plan: PackagePlan, target: Path, source: str, expected: str | None, progress: Progress | None = None
) -> Downloaded:
    """Write the package's model to ``target`` through a verified ``.partial``, like a download."""
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = partial_path(target)
    want = expected or plan.expected_sha256
    if want and plan.expected_sha256 and want != plan.expected_sha256:
        raise DigestMismatchError(source, want, plan.expected_sha256)
    reporter = progress or NullProgress()
    try:
        if plan.chunks:
            digest, size = _concatenate(plan.chunks, partial, reporter)
        elif plan.assemble is not None:
            partial.unlink(missing_ok=True)
            plan.assemble(partial)
            digest, size = hash_file(partial).hexdigest(), partial.stat().st_size
        else:
            raise PullError(f"{source}: nothing to build the model from")
    finally:
        reporter.close()
    if want and digest != want:
        partial.unlink(missing_ok=True)
        raise DigestMismatchError(source, want, digest)
    os.replace(partial, target)
    fsync_dir(target.parent)
    return Downloaded(path=target, sha256=digest, size=size)


def _concatenate(chunks: list[Path], partial: Path, reporter: Progress) -> tuple[str, int]:
    missing = [str(chunk) for chunk in chunks if not chunk.is_file()]
    if missing:
        raise SourceNotFoundError(f"the package's model parts are missing: {', '.join(missing)}")
    total = sum(chunk.stat().st_size for chunk in chunks)
    digest, done = hashlib.sha256(), 0
    with partial.open("wb") as out:
        for chunk in chunks:
            with chunk.open("rb") as src:
                while block := src.read(CHUNK_SIZE):
                    out.write(block)
                    digest.update(block)
                    done += len(block)
                    reporter.update(done, total)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest(), done
