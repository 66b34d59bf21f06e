"""Fixtures of the runtime unit tests. Its folder is where ``runtime_fast`` (the fast test layer) is imported from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from slm_runtime.engines.fake import FakeEngine


@pytest.fixture
def fake_engine() -> Iterator[FakeEngine]:
    """A fake engine with two slots, closed after the test."""
    engine = FakeEngine(2)
    yield engine
    engine.close()
