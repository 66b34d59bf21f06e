"""Slot threads: each slot's jobs run in order on one persistent thread; errors reach the caller."""

from __future__ import annotations

import threading

import pytest

from slm_runtime.workers import SlotThreads


def test_jobs_of_a_slot_share_one_thread_in_order() -> None:
    workers = SlotThreads(2)
    try:
        seen: list[tuple[int, str]] = []
        futures = [
            workers.submit(i % 2, lambda i=i: seen.append((i, threading.current_thread().name)))  # type: ignore[misc]
            for i in range(6)
        ]
        for future in futures:
            future.result(timeout=5)
        names = {i % 2: {name for j, name in seen if j % 2 == i % 2} for i in range(2)}
        assert names == {0: {"slm-slot-0"}, 1: {"slm-slot-1"}}
        assert [i for i, _ in seen if i % 2 == 0] == [0, 2, 4]
    finally:
        workers.shutdown()


def test_exceptions_are_delivered_and_the_thread_survives() -> None:
    workers = SlotThreads(1)
    try:

        def boom() -> None:
            raise ValueError("bad")

        with pytest.raises(ValueError, match="bad"):
            workers.submit(0, boom).result(timeout=5)
        assert workers.submit(0, lambda: 42).result(timeout=5) == 42
    finally:
        workers.shutdown()
