"""ggml's tiled kernel in a served engine's process: on, as ggml leaves it (each case runs in a process of its own, the
switch being fixed once per process, at its first matrix product).

With fewer slots than the tiled kernel's floor, generating calls stay below it and need no gate; from the floor on the
engine gates the model's K-quant weights, so that generating calls take the dot product and prompt calls the tiled
kernel. Either way, generations under load keep the tokens and log-probabilities they have alone, also for a prompt
read in chunks while others generate."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from slm_runtime.engines.batch_plan import MIN_CHUNK
from slm_runtime.engines.cpu_kernels import TILED_MIN_ROWS, TILED_SWITCH

pytestmark = pytest.mark.model

PROBE = Path(__file__).with_name("kernel_switch_probe.py")


@pytest.mark.parametrize(("parallel", "gated"), [(TILED_MIN_ROWS - 1, 0), (TILED_MIN_ROWS, 36)])
def test_generations_under_load_match_their_solo_runs_with_the_tiled_kernel_on(
    gguf_path: Path, parallel: int, gated: int
) -> None:
    """36 gated weights: Gemma 3 270M Q4_K_M's 18 attention output and 18 FFN down projections."""
    env = {key: value for key, value in os.environ.items() if key != TILED_SWITCH}
    run = subprocess.run(
        [sys.executable, str(PROBE), str(gguf_path), str(parallel)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    result = json.loads(run.stdout.strip().splitlines()[-1])
    assert result["switch"] is None
    assert result["gated_weights"] == gated
    assert result["same"] == [True] * parallel, result
    steps = [tuple(step) for step in result["steps"]]
    assert (parallel, parallel) in steps, f"no step generated for all {parallel} slots at once: {steps}"
    # slot 0's long prompt was read in chunks, call after call right behind the others' generating calls
    assert result["prompt_tokens"] > 2 * 64
    beside = [
        chunk
        for (sequences, tokens), (one, chunk) in itertools.pairwise(steps)
        if sequences == tokens >= 2 and one == 1 and chunk >= MIN_CHUNK
    ]
    assert len(beside) >= 2, steps
