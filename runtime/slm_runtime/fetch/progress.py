"""Download progress: a redrawn bar (bytes, rate, ETA) on a terminal, periodic log lines elsewhere (pods).

The formatting functions are pure; the reporters only decide when to draw. A reporter is told the running
byte count and the total (None when the server did not say) and is closed once the transfer ends.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = [
    "LogProgress",
    "NullProgress",
    "Progress",
    "ProgressFactory",
    "TerminalProgress",
    "auto_progress",
    "format_bytes",
    "format_duration",
    "render_status",
]

log = logging.getLogger(__name__)


class Progress(Protocol):
    def update(self, done: int, total: int | None) -> None: ...

    def close(self) -> None: ...


#: label (what is being fetched) -> a fresh reporter
ProgressFactory = Callable[[str], Progress]


def format_bytes(count: float) -> str:
    """'512 B', '1.5 KiB', '2.0 GiB'."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def format_duration(seconds: float | None) -> str:
    """'42s', '3m05s', '1h02m'; '--' when unknown."""
    if seconds is None or math.isnan(seconds) or seconds < 0 or seconds > 100 * 86400:
        return "--"
    whole = int(seconds + 0.5)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def render_status(done: int, total: int | None, rate: float, *, width: int = 0) -> str:
    """'[#####.....]  45% 1.1 GiB/2.4 GiB 85.2 MiB/s ETA 15s' (no bar when width is 0 or total unknown)."""
    speed = f"{format_bytes(rate)}/s"
    if not total:
        return f"{format_bytes(done)} {speed}"
    fraction = min(1.0, done / total)
    eta = (total - done) / rate if rate > 0 else None
    amount = f"{format_bytes(done)}/{format_bytes(total)}"
    text = f"{fraction * 100:3.0f}% {amount} {speed} ETA {format_duration(eta)}"
    if width > 0:
        filled = int(width * fraction)
        text = f"[{'#' * filled}{'.' * (width - filled)}] {text}"
    return text


class _Rate:
    """Average rate over the bytes this process moved (bytes already on disk at start do not count)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._start = clock()
        self._first: int | None = None

    def __call__(self, done: int) -> float:
        if self._first is None:
            self._first = done
        elapsed = self._clock() - self._start
        return (done - self._first) / elapsed if elapsed > 0 else 0.0


class NullProgress:
    def update(self, done: int, total: int | None) -> None:
        pass

    def close(self) -> None:
        pass


class TerminalProgress:
    """A bar redrawn in place on ``stream`` at most ``interval`` seconds apart."""

    def __init__(
        self,
        label: str,
        stream: TextIO,
        *,
        interval: float = 0.1,
        width: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label, self._stream, self._interval, self._width, self._clock = (
            label,
            stream,
            interval,
            width,
            clock,
        )
        self._rate = _Rate(clock)
        self._last = float("-inf")
        self._state: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None) -> None:
        rate = self._rate(done)
        self._state = (done, total)
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._draw(done, total, rate)

    def _draw(self, done: int, total: int | None, rate: float) -> None:
        self._stream.write(f"\r{self._label} {render_status(done, total, rate, width=self._width)}\x1b[K")
        self._stream.flush()

    def close(self) -> None:
        if self._state is not None:
            done, total = self._state
            self._draw(done, total, self._rate(done))
            self._stream.write("\n")
            self._stream.flush()


class LogProgress:
    """One INFO log line every ``interval`` seconds, and one at the end (what `kubectl logs` shows)."""

    def __init__(
        self,
        label: str,
        *,
        interval: float = 10.0,
        logger: logging.Logger = log,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._label, self._interval, self._log, self._clock = label, interval, logger, clock
        self._rate = _Rate(clock)
        self._last = clock()
        self._state: tuple[int, int | None] | None = None

    def update(self, done: int, total: int | None) -> None:
        rate = self._rate(done)
        self._state = (done, total)
        now = self._clock()
        if now - self._last >= self._interval:
            self._last = now
            self._log.info("%s: %s", self._label, render_status(done, total, rate))

    def close(self) -> None:
        if self._state is not None:
            done, total = self._state
            self._log.info("%s: done, %s", self._label, render_status(done, total, self._rate(done)))


def auto_progress(label: str) -> Progress:
    """A terminal bar when stderr is a TTY, periodic log lines otherwise."""
    if sys.stderr.isatty():
        return TerminalProgress(label, sys.stderr)
    return LogProgress(label)
