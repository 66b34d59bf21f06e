"""The tiled-kernel gate: needed from the tiled floor's number of slots on in the batch-invariant mode, and it sets
and clears ``extra`` on exactly the weights it holds; MIN_CHUNK keeps prompt chunks above the floor."""

from __future__ import annotations

import ctypes
import threading

import pytest

from slm_runtime.engines.batch_plan import MIN_CHUNK
from slm_runtime.engines.cpu_kernels import TILED_MIN_ROWS, GgmlTensor, TiledGate, needs_gate, on_own_thread


def test_the_invariant_mode_gates_engines_whose_generating_calls_reach_the_floor() -> None:
    assert needs_gate(True, TILED_MIN_ROWS)
    assert needs_gate(True, 16)
    assert not needs_gate(True, TILED_MIN_ROWS - 1)
    assert not needs_gate(False, 16)


def test_prompt_chunks_stay_above_the_floor() -> None:
    assert MIN_CHUNK > TILED_MIN_ROWS


def test_the_gate_sets_extra_on_its_weights_for_generating_calls_and_clears_it_for_prompt_calls() -> None:
    weights = [GgmlTensor(), GgmlTensor()]
    bystander = GgmlTensor()
    for tensor in (*weights, bystander):
        tensor.name = b"blk.0.ffn_down.weight"
    gate = TiledGate([ctypes.addressof(tensor) for tensor in weights])
    assert gate.weights == 2

    gate.allow(False)
    markers = {tensor.extra for tensor in weights}
    assert len(markers) == 1 and None not in markers
    assert bystander.extra is None
    assert all(tensor.name == b"blk.0.ffn_down.weight" for tensor in weights)  # nothing but extra is written

    gate.allow(False)
    assert {tensor.extra for tensor in weights} == markers
    gate.allow(True)
    assert [tensor.extra for tensor in weights] == [None, None]


def test_work_runs_on_a_thread_that_ends_with_it_and_gives_back_its_result_or_error() -> None:
    seen: list[threading.Thread] = []

    def work() -> int:
        seen.append(threading.current_thread())
        return 42

    assert on_own_thread(work) == 42
    assert seen[0] is not threading.current_thread()
    assert not seen[0].is_alive()

    def failing() -> int:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        on_own_thread(failing)
