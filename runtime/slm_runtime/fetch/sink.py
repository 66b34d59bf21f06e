"""A file sink that writes and hashes on a worker thread, so disk and sha256 overlap with network reads.

``hashlib`` and ``os.write`` release the GIL on large buffers, so while the HTTP reader parses the next
blocks on the calling thread, the worker appends and hashes the previous ones: on two cores a pull costs
about max(read, hash + write) instead of their sum. The queue holds at most ``depth`` blocks (httpx yields
up to 64 KiB at a time), so memory stays small however slow the disk is. Blocks are not joined into bigger
ones: measured, the copy cost more than the queue operations it saved.

``written`` counts the bytes that reached the file and the hasher; after ``close()`` it is exact, also
when the transfer failed half-way, so a resume asks for precisely the missing tail.
"""

from __future__ import annotations

import os
import queue
import threading
from types import TracebackType
from typing import Any

__all__ = ["HashingSink"]

_STOP = object()


class HashingSink:
    """Append blocks to the open file ``fd`` and feed them to ``hasher``; use as a context manager."""

    def __init__(self, fd: int, hasher: Any, *, depth: int = 256) -> None:
        self.written = 0
        self._fd, self._hasher = fd, hasher
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="slm-pull-writer", daemon=True)
        self._thread.start()

    def put(self, block: bytes) -> None:
        """Queue ``block``; raises the worker's error (disk full...) as soon as it is known."""
        if self._error is not None:
            raise self._error
        self._queue.put(block)

    def close(self) -> None:
        """Write what is queued, stop the worker, and raise its error if it had one."""
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error

    def _work(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if self._error is not None:
                continue  # keep draining so put() never blocks on a dead worker
            assert isinstance(item, bytes)
            try:
                view = memoryview(item)
                while view:
                    view = view[os.write(self._fd, view) :]
                self._hasher.update(item)
                self.written += len(item)
            except BaseException as exc:  # handed to the reader thread
                self._error = exc

    def __enter__(self) -> HashingSink:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
