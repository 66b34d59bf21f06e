"""sha256 helpers: normalising user input and hashing files in place."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

__all__ = ["CHUNK_SIZE", "hash_file", "is_sha256", "normalize_sha256"]

CHUNK_SIZE = 1 << 20
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def normalize_sha256(value: str) -> str:
    """Lower-case hex from 'HEX', 'sha256:HEX' or 'sha256-HEX'; ValueError naming the fix otherwise."""
    text = value.strip().lower()
    for prefix in ("sha256:", "sha256-"):
        text = text.removeprefix(prefix)
    if not _HEX64.match(text):
        raise ValueError(f"'{value}' is not a sha256 digest; give 64 hex characters, optionally after 'sha256:'")
    return text


def is_sha256(value: str) -> bool:
    """True for 64 lower- or upper-case hex characters."""
    return bool(_HEX64.match(value.lower()))


def hash_file(path: Path, *, limit: int | None = None) -> hashlib._Hash:
    """A sha256 object fed with the file's first ``limit`` bytes (all of it when None)."""
    digest = hashlib.sha256()
    remaining = limit
    with path.open("rb") as src:
        while remaining is None or remaining > 0:
            block = src.read(CHUNK_SIZE if remaining is None else min(CHUNK_SIZE, remaining))
            if not block:
                break
            digest.update(block)
            if remaining is not None:
                remaining -= len(block)
    return digest
