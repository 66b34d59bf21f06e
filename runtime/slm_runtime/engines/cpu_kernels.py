"""llama.cpp's CPU kernel switches that decide whether a token's arithmetic depends on its neighbours in a call.

ggml's CPU backend multiplies K-quant weights (Q2_K to Q6_K, some IQ types) with a tiled kernel from 8 rows per
call on and with the one-row dot product below that. The two round differently, so a sequence generating beside
seven others (8 rows) gets other log-probabilities than alone (1 row). The batch-invariant mode turns the tiled
kernel off (``GGML_CPU_TILED_MM=0``), which ggml reads once per process, at its first K-quant matrix product.
Cost and measurements: docs/batching.md, "Kernels".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

log = logging.getLogger(__name__)

TILED_SWITCH = "GGML_CPU_TILED_MM"

_first_mode: bool | None = None
"""The batch-invariant setting of the first llama.cpp engine this process loaded (ggml fixes the switch then)."""


def tiled_switch_value(batch_invariant: bool, environ: Mapping[str, str]) -> tuple[str | None, str | None]:
    """The value to give the tiled-kernel switch (None: leave it) and a warning when the environment rules out
    batch invariance."""
    if not batch_invariant:
        return None, None
    current = environ.get(TILED_SWITCH)
    if current is None:
        return "0", None
    try:
        enabled = int(current) != 0
    except ValueError:
        enabled = True  # ggml's atoi reads a non-number as 0, but the person meant something: say so
    if enabled:
        return None, (
            f"{TILED_SWITCH}={current} keeps ggml's tiled kernel on: greedy output may vary with load despite "
            f"batch_invariant; unset {TILED_SWITCH} (or set engine.batch_invariant false to say so)"
        )
    return None, None


def prepare(batch_invariant: bool) -> None:
    """Set the switch for this process before its first engine computes anything (call before loading a model)."""
    global _first_mode
    if _first_mode is None:
        _first_mode = batch_invariant
    elif batch_invariant and not _first_mode:
        log.warning(
            "a llama.cpp engine with batch_invariant false ran first in this process: ggml keeps its tiled kernel, "
            "so this engine's greedy output may vary with load"
        )
    value, warning = tiled_switch_value(batch_invariant, os.environ)
    if warning:
        log.warning(warning)
    if value is not None:
        os.environ[TILED_SWITCH] = value
