"""Polling with a deadline, for tests that wait on controllers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["WaitTimeoutError", "wait_until"]

T = TypeVar("T")


class WaitTimeoutError(AssertionError):
    """The condition did not hold in time (an AssertionError, so pytest reports it as a test failure)."""


def wait_until(what: str, probe: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25) -> T:
    """Call `probe` until it returns something truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise WaitTimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")
        time.sleep(interval)
