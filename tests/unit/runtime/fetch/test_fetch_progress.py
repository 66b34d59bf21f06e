"""Progress rendering (pure), the two reporters, and the retry backoff."""

from __future__ import annotations

import io
import logging
import random

import pytest

from slm_runtime.fetch.progress import LogProgress, TerminalProgress, format_bytes, format_duration, render_status
from slm_runtime.fetch.retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_formatting() -> None:
    assert format_bytes(512) == "512 B"
    assert format_bytes(1536) == "1.5 KiB"
    assert format_bytes(3 * 1024**3) == "3.0 GiB"
    assert format_duration(42) == "42s"
    assert format_duration(185) == "3m05s"
    assert format_duration(3720) == "1h02m"
    assert format_duration(None) == "--"
    assert render_status(50, 100, 10.0, width=10) == "[#####.....]  50% 50 B/100 B 10 B/s ETA 5s"
    assert render_status(2048, None, 1024.0) == "2.0 KiB 1.0 KiB/s"


def test_terminal_bar_redraws_in_place_at_most_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    bar = TerminalProgress("tiny.gguf", out, interval=1.0, width=4, clock=clock)
    bar.update(0, 4096)
    clock.now += 0.5
    bar.update(1024, 4096)  # too soon: not drawn
    clock.now += 0.5
    bar.update(2048, 4096)
    bar.close()
    frames = out.getvalue().split("\r")[1:]
    assert len(frames) == 3
    assert frames[1].startswith("tiny.gguf [##..]  50% 2.0 KiB/4.0 KiB 2.0 KiB/s ETA 1s")
    assert out.getvalue().endswith("\n")


def test_log_lines_are_periodic(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    reporter = LogProgress("tiny.gguf", interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="slm_runtime.fetch.progress"):
        for second in range(25):
            clock.now += 1
            reporter.update(second * 1000, 25_000)
        reporter.close()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3  # at 10 s, at 20 s, and the final line
    assert messages[0].startswith("tiny.gguf:  36% ")
    assert "done" in messages[-1]


def test_backoff_grows_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=5, base=1.0, cap=5.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    jittered = RetryPolicy(base=1.0, jitter=0.25).delay(1, random.Random(7))
    assert 0.75 <= jittered <= 1.25
    assert not policy.gives_up_after(4)
    assert policy.gives_up_after(5)
