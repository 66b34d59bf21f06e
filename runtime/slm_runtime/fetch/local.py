"""file:// and pvc:// sources: models already on a mounted filesystem, used in place (nothing copied).

The file is hashed where it lies and checked against the pin. A folder (an onnxruntime-genai model) gets a
tree digest: the sha256 of the lines ``"<sha256 of file>  <path relative to the folder>\\n"`` sorted by path,
the same lines ``sha256sum`` prints, and a size that is the sum of its files.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from slm_runtime.source import ModelSource, SourceScheme

from .digest import CHUNK_SIZE
from .errors import DigestMismatchError, SourceNotFoundError
from .progress import NullProgress, Progress
from .settings import FetchSettings

__all__ = ["hash_in_place", "locate", "tree_digest", "verify_in_place"]


def locate(source: ModelSource, settings: FetchSettings) -> Path:
    """The path a file:// or pvc:// source names on this machine (pvc claims are mounted under pvc_root)."""
    if source.scheme is SourceScheme.PVC:
        return settings.pvc_root.joinpath(source.name, source.path.strip("/"))
    if source.scheme is SourceScheme.FILE:
        return Path(source.path)
    raise ValueError(f"{source.raw} is not a file:// or pvc:// source")


def tree_digest(entries: list[tuple[str, str]]) -> str:
    """sha256 of sorted ``"<hex>  <relpath>\\n"`` lines (pure)."""
    lines = "".join(f"{hexdigest}  {rel}\n" for rel, hexdigest in sorted(entries, key=lambda item: item[0]))
    return hashlib.sha256(lines.encode()).hexdigest()


def hash_in_place(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """(sha256 hex, size) of a file, or the tree digest and total size of a folder."""
    reporter = progress or NullProgress()
    try:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            total = sum(p.stat().st_size for p in files)
            done = 0
            entries = []
            for file in files:
                digest, done = _hash(file, reporter, done, total)
                entries.append((file.relative_to(path).as_posix(), digest))
            return tree_digest(entries), total
        total = path.stat().st_size
        digest, _ = _hash(path, reporter, 0, total)
        return digest, total
    finally:
        reporter.close()


def _hash(path: Path, reporter: Progress, done: int, total: int) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as src:
        while block := src.read(CHUNK_SIZE):
            digest.update(block)
            done += len(block)
            reporter.update(done, total)
    return digest.hexdigest(), done


def verify_in_place(
    path: Path, source: ModelSource, expected: str | None, progress: Progress | None = None
) -> tuple[str, int]:
    """Hash ``path`` and compare with ``expected``; the file is never touched, even on a mismatch."""
    if not path.exists():
        hint = " (is the claim mounted there? see --pvc-root)" if source.scheme is SourceScheme.PVC else ""
        raise SourceNotFoundError(f"{source.raw}: {path} does not exist{hint}")
    digest, size = hash_in_place(path, progress)
    if expected and digest != expected:
        raise DigestMismatchError(source.raw, expected, digest)
    return digest, size
