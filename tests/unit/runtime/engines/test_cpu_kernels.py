"""The tiled-kernel switch: off in the batch-invariant mode unless the person set it, with a warning when it's on."""

from __future__ import annotations

import logging

import pytest

from slm_runtime.engines import cpu_kernels
from slm_runtime.engines.cpu_kernels import TILED_SWITCH, tiled_switch_value


def test_the_invariant_mode_turns_the_tiled_kernel_off() -> None:
    assert tiled_switch_value(True, {}) == ("0", None)


def test_the_fast_mode_leaves_the_switch_alone() -> None:
    assert tiled_switch_value(False, {}) == (None, None)
    assert tiled_switch_value(False, {TILED_SWITCH: "1"}) == (None, None)


def test_a_switch_already_off_is_kept() -> None:
    assert tiled_switch_value(True, {TILED_SWITCH: "0"}) == (None, None)


@pytest.mark.parametrize("value", ["1", "yes"])
def test_a_switch_set_on_is_kept_with_a_warning_naming_the_fix(value: str) -> None:
    kept, warning = tiled_switch_value(True, {TILED_SWITCH: value})
    assert kept is None
    assert warning is not None
    assert f"{TILED_SWITCH}={value}" in warning and f"unset {TILED_SWITCH}" in warning


def test_prepare_sets_the_process_environment_and_warns_after_a_fast_engine(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(TILED_SWITCH, "restored after the test")
    monkeypatch.delenv(TILED_SWITCH)
    monkeypatch.setattr(cpu_kernels, "_first_mode", None)
    cpu_kernels.prepare(False)
    assert TILED_SWITCH not in cpu_kernels.os.environ
    with caplog.at_level(logging.WARNING, logger=cpu_kernels.__name__):
        cpu_kernels.prepare(True)
    assert cpu_kernels.os.environ[TILED_SWITCH] == "0"
    assert "batch_invariant false ran first" in caplog.text
