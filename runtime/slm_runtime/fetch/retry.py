"""Retry policy: which failures are worth another try and how long to wait before it (pure logic)."""

from __future__ import annotations

import random
from dataclasses import dataclass

import httpx

__all__ = ["RETRYABLE_STATUS", "RETRYABLE_TRANSPORT", "RetryPolicy"]

#: statuses a server uses for "not now": request timeout, rate limit, and every 5xx
RETRYABLE_STATUS = frozenset({408, 425, 429}) | frozenset(range(500, 600))

#: transport failures worth retrying (timeouts, refused/reset connections, bodies cut short)
RETRYABLE_TRANSPORT: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """``max_attempts`` tries in all; waits grow exponentially from ``base`` up to ``cap``, with jitter."""

    max_attempts: int = 6
    base: float = 1.0
    cap: float = 30.0
    jitter: float = 0.25

    def delay(self, failures: int, rng: random.Random | None = None) -> float:
        """Seconds to wait after the ``failures``-th consecutive failure (1 for the first)."""
        raw = min(self.cap, self.base * 2.0 ** max(0, failures - 1))
        spread = raw * self.jitter
        return max(0.0, raw + (rng or _RNG).uniform(-spread, spread))

    def gives_up_after(self, failures: int) -> bool:
        """True when ``failures`` consecutive failures exhaust the attempts."""
        return failures >= self.max_attempts
