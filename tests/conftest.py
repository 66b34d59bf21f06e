"""What must hold in the test process before any test loads a model.

ggml fixes its tiled-kernel switch (slm_runtime.engines.cpu_kernels) at the process's first matrix product, and this
one process loads llama.cpp engines of 1 to 8 slots in whatever order the tests run. The switch is pinned off here,
the choice an engine of 8 or more slots makes, so that every in-process engine is batch-invariant whatever loaded
first. The choice of engines with fewer slots (the tiled kernel on, for prompt chunks) is tested in processes of
their own: tests/e2e/runtime/test_kernel_switch.py.
"""

from __future__ import annotations

import os

from slm_runtime.engines.cpu_kernels import TILED_SWITCH

os.environ[TILED_SWITCH] = "0"
