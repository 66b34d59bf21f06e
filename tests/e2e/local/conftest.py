"""Fixtures for the local-mode tests on the real Gemma 3 270M model.

`slm serve examples/gemma3-270m.yaml` runs once per session as a real process on a free loopback port (the
model is assembled from its PyPI package into the cache on first use), exactly as a user starts it; the
official clients, `slm ps/show/bench/run` and the tmux-driven REPL all talk to it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from local_e2e import EXAMPLE, SlmServe


@pytest.fixture(scope="session")
def served() -> Iterator[SlmServe]:
    server = SlmServe(EXAMPLE)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()
