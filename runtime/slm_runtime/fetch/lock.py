"""An advisory file lock so pullers sharing one cache (replicas on an RWX volume) download a model once.

``flock(2)`` on ``<model file>.lock``: the first puller holds it while downloading; the others wait, then
find the model cached and reuse it. The kernel (or the NFS server, where flock maps onto NFS locks) drops
the lock when its holder dies, so a crashed pod never leaves a stale lock. Lock files are left in place on
purpose: deleting one while another process waits on it would let two holders in.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path
from types import TracebackType

from .errors import PullError

__all__ = ["FileLock", "LockTimeoutError"]

log = logging.getLogger(__name__)


class LockTimeoutError(PullError):
    """Another puller held the lock for longer than the lock timeout."""


class FileLock:
    """Exclusive lock on ``path``; use as a context manager.

    Waiters poll (from ``poll`` up to 1 s apart) instead of blocking, so they can log who holds the lock and
    give up after ``timeout`` seconds (None waits forever).
    """

    def __init__(
        self, path: Path, *, timeout: float | None = None, poll: float = 0.05, report_every: float = 30.0
    ) -> None:
        self.path = path
        self.timeout = timeout
        self.poll = poll
        self.report_every = report_every
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o664)
        except PermissionError:  # created by a replica running as another user: flock needs no write access
            fd = os.open(self.path, os.O_RDONLY)
        start = time.monotonic()
        last_report: float | None = None
        delay = self.poll
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if not isinstance(exc, BlockingIOError):
                        raise _unsupported(self.path, exc) from exc
                    now = time.monotonic()
                    if last_report is None or now - last_report >= self.report_every:
                        log.info("waiting for %s to finish pulling (lock %s)", _holder(fd), self.path)
                        last_report = now
                    if self.timeout is not None and now - start >= self.timeout:
                        raise LockTimeoutError(
                            f"another puller ({_holder(fd)}) held {self.path} for over {self.timeout:.0f}s"
                        ) from None
                    time.sleep(delay)
                    delay = min(1.0, delay * 2)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{socket.gethostname()} pid {os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # only informs waiters' log lines

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()


def _unsupported(path: Path, exc: OSError) -> PullError:
    return PullError(
        f"cannot lock {path} ({exc.strerror}): the cache filesystem does not support file locks, so replicas "
        "sharing it could not coordinate; mount it with locking enabled (NFS: no 'nolock') or give each pod "
        "its own cache (spec.cache.volume: emptyDir)"
    )


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
    except OSError:
        return "another process"
