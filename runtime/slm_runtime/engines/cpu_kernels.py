"""llama.cpp's CPU kernel switch that decides whether a generating token's arithmetic depends on its neighbours.

ggml's CPU backend multiplies K-quant weights (Q2_K to Q6_K and some IQ types: in Gemma 3 270M Q4_K_M the attention
output and FFN down projections) with a tiled kernel from :data:`TILED_MIN_ROWS` rows per call on, and with the
one-row dot product below that. The two round differently. A prompt is always read in chunks of at least
:data:`~slm_runtime.engines.batch_plan.MIN_CHUNK` tokens (tiled, alone or not), and a generating call carries one row
per slot at most, so with fewer slots than that floor every generating token takes the dot product, alone or not.
From that many slots on, a sequence generating beside the others would get other log-probabilities than alone (0.885
in a logit over 24 steps of 8 rows, raw API), so the batch-invariant mode turns the tiled kernel off
(``GGML_CPU_TILED_MM=0``): every K-quant product then takes the dot product, bit-identical at any row count (1 to
16 rows and prompt chunks cut anywhere, measured), at the cost of slower prompt reading (docs/batching.md).

ggml reads the switch once per process, at its first matrix product: :func:`prepare` sets it before an engine loads.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

log = logging.getLogger(__name__)

TILED_SWITCH = "GGML_CPU_TILED_MM"

TILED_MIN_ROWS = 8
"""The fewest rows per call that take ggml's tiled kernel (``ggml_tiled_min_batch`` in ggml-cpu/tiled/tiled.cpp, as
vendored by llama-cpp-python 0.3.36)."""

_tiled_on: bool | None = None
"""Whether ggml's tiled kernel is on in this process, fixed when the first llama.cpp engine loaded."""


def tiled_switch_value(
    batch_invariant: bool, parallel: int, environ: Mapping[str, str]
) -> tuple[str | None, str | None]:
    """The value to give the tiled-kernel switch (None: leave it) and a warning when the environment rules out
    batch invariance."""
    if not batch_invariant or parallel < TILED_MIN_ROWS:
        return None, None
    current = environ.get(TILED_SWITCH)
    if current is None:
        return "0", None
    if _enabled(current):
        return None, (
            f"{TILED_SWITCH}={current} keeps ggml's tiled kernel on: with {parallel} slots greedy output may vary "
            f"with load despite batch_invariant; unset {TILED_SWITCH} (or set engine.batch_invariant false to say so)"
        )
    return None, None


def prepare(batch_invariant: bool, parallel: int) -> None:
    """Set the switch for an engine of ``parallel`` slots before it loads (the first engine of the process fixes it)."""
    global _tiled_on
    value, warning = tiled_switch_value(batch_invariant, parallel, os.environ)
    if warning:
        log.warning(warning)
    if value is not None:
        os.environ[TILED_SWITCH] = value
    if _tiled_on is None:
        _tiled_on = _enabled(os.environ.get(TILED_SWITCH))
    elif _tiled_on and value is not None:
        log.warning(
            "an engine loaded earlier in this process left ggml's tiled kernel on: with %d slots this engine's greedy "
            "output may vary with load; load it in a process of its own",
            parallel,
        )


def _enabled(value: str | None) -> bool:
    """ggml's reading of the switch: unset is on, otherwise C's atoi (a leading integer, a non-number is 0)."""
    if value is None:
        return True
    number = re.match(r"\s*[+-]?\d+", value)
    return number is not None and int(number.group()) != 0
