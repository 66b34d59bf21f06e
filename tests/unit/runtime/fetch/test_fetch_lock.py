"""Shared cache: concurrent pullers of one model download it once and all succeed."""

from __future__ import annotations

import errno
import fcntl
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from fetchtest_servers import FakeServer, model_bytes, quiet, sha

from slm_runtime.fetch import FetchSettings, LockTimeoutError, PulledModel, PullError, pull
from slm_runtime.fetch.lock import FileLock

DATA = model_bytes(1024 * 1024)
PATH = "/m/shared.gguf"


def test_two_threads_download_once(server: FakeServer, dest: Path, settings: FetchSettings) -> None:
    server.add(PATH, DATA, slow=0.02)  # ~0.3 s transfer: the second puller certainly finds the lock taken
    source = f"{server.url}{PATH}"

    def one(_: int) -> PulledModel:
        return pull(source, dest, settings=settings, progress=quiet)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(one, range(2)))
    assert len(server.gets(PATH)) == 1
    assert {r.digest for r in results} == {f"sha256:{sha(DATA)}"}
    assert sorted(r.cached for r in results) == [False, True]


def test_two_processes_download_once(server: FakeServer, dest: Path) -> None:
    server.add(PATH, DATA, slow=0.02)
    command = [sys.executable, "-m", "slm_runtime.cli", "pull", f"{server.url}{PATH}", "--dest", str(dest)]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
    outputs = [p.communicate(timeout=30) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in outputs]
    assert len(server.gets(PATH)) == 1
    models = [PulledModel.model_validate_json(out) for out, _ in outputs]
    assert sorted(m.cached for m in models) == [False, True]


def test_lock_timeout(tmp_path: Path) -> None:
    path = tmp_path / "x.lock"
    with FileLock(path), pytest.raises(LockTimeoutError, match="pid"):
        FileLock(path, timeout=0.1).acquire()
    with FileLock(path, timeout=0.1) as lock:  # released: free again at once
        assert lock.path == path


def test_filesystem_without_locks_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_locks(fd: int, operation: int) -> None:
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(PullError, match=r"does not support file locks.*spec\.cache\.volume"):
        FileLock(tmp_path / "x.lock").acquire()
