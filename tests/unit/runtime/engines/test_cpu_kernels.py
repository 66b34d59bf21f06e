"""The tiled-kernel switch: off in the batch-invariant mode from the tiled floor's number of slots on, unless the
person set it, with a warning when it's on; MIN_CHUNK keeps prompt chunks above the floor."""

from __future__ import annotations

import logging
import os

import pytest

from slm_runtime.engines import cpu_kernels
from slm_runtime.engines.batch_plan import MIN_CHUNK
from slm_runtime.engines.cpu_kernels import TILED_MIN_ROWS, TILED_SWITCH, tiled_switch_value


def test_the_invariant_mode_turns_the_tiled_kernel_off_where_generating_calls_reach_its_floor() -> None:
    assert tiled_switch_value(True, TILED_MIN_ROWS, {}) == ("0", None)
    assert tiled_switch_value(True, 16, {}) == ("0", None)


def test_fewer_slots_than_the_floor_leave_the_tiled_kernel_to_prompt_chunks() -> None:
    assert tiled_switch_value(True, TILED_MIN_ROWS - 1, {}) == (None, None)
    assert tiled_switch_value(True, 1, {TILED_SWITCH: "1"}) == (None, None)


def test_prompt_chunks_stay_above_the_floor() -> None:
    assert MIN_CHUNK > TILED_MIN_ROWS


def test_the_fast_mode_leaves_the_switch_alone() -> None:
    assert tiled_switch_value(False, 16, {}) == (None, None)
    assert tiled_switch_value(False, 16, {TILED_SWITCH: "1"}) == (None, None)


@pytest.mark.parametrize("value", ["0", " 0", "off"])
def test_a_switch_ggml_reads_as_off_is_kept(value: str) -> None:
    assert tiled_switch_value(True, 8, {TILED_SWITCH: value}) == (None, None)


@pytest.mark.parametrize("value", ["1", "2", " 1x"])
def test_a_switch_set_on_is_kept_with_a_warning_naming_the_fix(value: str) -> None:
    kept, warning = tiled_switch_value(True, 8, {TILED_SWITCH: value})
    assert kept is None
    assert warning is not None
    assert f"{TILED_SWITCH}={value}" in warning and f"unset {TILED_SWITCH}" in warning


@pytest.fixture
def fresh_process(monkeypatch: pytest.MonkeyPatch) -> None:
    """No engine loaded yet, the switch unset (both restored after the test)."""
    monkeypatch.setenv(TILED_SWITCH, "restored after the test")
    monkeypatch.delenv(TILED_SWITCH)
    monkeypatch.setattr(cpu_kernels, "_tiled_on", None)


@pytest.mark.usefixtures("fresh_process")
def test_prepare_sets_the_process_environment_for_eight_slots() -> None:
    cpu_kernels.prepare(True, 8)
    assert os.environ[TILED_SWITCH] == "0"
    assert cpu_kernels._tiled_on is False


@pytest.mark.usefixtures("fresh_process")
def test_prepare_warns_when_an_earlier_engine_left_the_tiled_kernel_on(caplog: pytest.LogCaptureFixture) -> None:
    cpu_kernels.prepare(True, 4)
    assert TILED_SWITCH not in os.environ
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        cpu_kernels.prepare(True, 8)
    assert "left ggml's tiled kernel on" in caplog.text
