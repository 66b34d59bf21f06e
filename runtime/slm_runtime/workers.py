"""Persistent worker threads: every computation given to one of them runs on the same OS thread, in order.

llama.cpp parallelises with OpenMP, whose thread teams belong to the thread that calls in. Computing from a
fresh thread per request (or from a thread pool) leaves several teams alive that compete for the cores; on a
2-core machine decoding was ~30% slower than from a single thread. A fixed thread keeps one team and also
serialises its work by construction. Users: the service's embedding thread, and the engines that decode each
slot on its own thread (onnxruntime-genai, the fake engine); llama.cpp's generations run on its decoder thread.
"""

from __future__ import annotations

import concurrent.futures
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["SlotThreads"]

T = TypeVar("T")

_Job = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"] | None


class SlotThreads:
    def __init__(self, slots: int, name: str = "slm-slot") -> None:
        self._queues: list[queue.SimpleQueue[_Job]] = [queue.SimpleQueue() for _ in range(slots)]
        self._threads = [
            threading.Thread(target=self._serve, args=(jobs,), name=f"{name}-{index}", daemon=True)
            for index, jobs in enumerate(self._queues)
        ]
        for thread in self._threads:
            thread.start()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[_Job]) -> None:
        while True:
            job = jobs.get()
            if job is None:
                return
            function, future = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(function())
            except BaseException as exc:
                future.set_exception(exc)

    def submit(self, slot: int, function: Callable[[], T]) -> concurrent.futures.Future[T]:
        """Run ``function`` on the slot's thread, after the jobs already queued there."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._queues[slot].put((function, future))
        return future

    def shutdown(self, timeout: float = 5.0) -> None:
        for jobs in self._queues:
            jobs.put(None)
        for thread in self._threads:
            thread.join(timeout)
