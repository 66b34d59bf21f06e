"""The writer thread: exact byte counts, the same digest as hashing inline, errors handed back."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from slm_runtime.fetch.sink import HashingSink


def test_writes_and_hashes_everything_in_order(tmp_path: Path) -> None:
    blocks = [os.urandom(n) for n in (1, 65536, 7, 300_000)]
    path = tmp_path / "out"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    hasher = hashlib.sha256(b"prefix")
    with HashingSink(fd, hasher, depth=2) as sink:
        for block in blocks:
            sink.put(block)
    os.close(fd)
    data = b"".join(blocks)
    assert sink.written == len(data)
    assert path.read_bytes() == data
    assert hasher.hexdigest() == hashlib.sha256(b"prefix" + data).hexdigest()


def test_write_error_reaches_the_reader(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "ro", os.O_RDONLY | os.O_CREAT)
    sink = HashingSink(fd, hashlib.sha256())

    def feed() -> None:
        for _ in range(1000):  # the error surfaces at a later put() or at close()
            sink.put(b"x" * 1000)
        sink.close()

    with pytest.raises(OSError, match="Bad file descriptor"):
        feed()
    assert sink.written == 0
    os.close(fd)
