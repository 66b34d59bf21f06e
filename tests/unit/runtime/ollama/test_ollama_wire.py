"""Ollama request fields read into the runtime's values (slm_runtime.ollama.wire): keep_alive durations."""

from __future__ import annotations

import pytest

from slm_runtime.errors import InvalidRequestError
from slm_runtime.ollama.wire import keep_alive_seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (0, 0.0), ("0", 0.0), (30, 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("1.5s", 1.5)],
)
def test_keep_alive_takes_seconds_or_go_durations(value: str | int | None, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m5", ""])
def test_a_keep_alive_that_is_no_duration_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        keep_alive_seconds(value)
    assert caught.value.param == "keep_alive"
