"""llama.cpp calls that the decoder thread makes for every token, bound so that they keep the GIL.

ctypes releases the GIL around every foreign call, and taking it back waits for whichever Python thread holds it
(up to the 5 ms switch interval) — per call. With eight streams the decoder thread made dozens of such calls per
step while the HTTP threads ran, and spent most of each step waiting for the GIL. Only ``llama_decode``
(milliseconds of matrix work) still releases it; the calls here take microseconds and go through a ``PyDLL`` view of
the same loaded library, with the signatures llama-cpp-python declares.

Also here: :data:`TOKEN_DATA`, numpy's view of llama.cpp's ``llama_token_data``, for samplers that fill a
candidate array from the logits themselves instead of letting ``llama_sampler_sample`` do it.
"""

from __future__ import annotations

import ctypes
import functools
from typing import Any

import numpy as np

__all__ = ["TOKEN_DATA", "QuickCalls", "candidates", "quick_calls"]

TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])
"""``struct llama_token_data {llama_token id; float logit; float p;}`` (12 bytes, no padding)."""


class QuickCalls:
    """The per-token llama.cpp functions, bound without releasing the GIL (see the module docstring)."""

    def __init__(self) -> None:
        from llama_cpp import llama_cpp as native

        library = ctypes.PyDLL(native._lib._name)
        self.sample = self._bind(library, native.llama_sampler_sample)
        self.apply = self._bind(library, native.llama_sampler_apply)
        self.accept = self._bind(library, native.llama_sampler_accept)
        self.clone = self._bind(library, native.llama_sampler_clone)
        self.free = self._bind(library, native.llama_sampler_free)
        self.token_to_piece = self._bind(library, native.llama_token_to_piece)
        self.is_eog = self._bind(library, native.llama_vocab_is_eog)
        self.logits = self._bind(library, native.llama_get_logits_ith)

    @staticmethod
    def _bind(library: ctypes.PyDLL, declared: Any) -> Any:
        function = getattr(library, declared.__name__)
        function.argtypes = declared.argtypes
        function.restype = declared.restype
        return function


@functools.cache
def quick_calls() -> QuickCalls:
    """The process's one set of bindings (loading llama.cpp on first use)."""
    return QuickCalls()


def candidates(cells: np.ndarray[Any, Any], size: int) -> Any:
    """A ``llama_token_data_array`` over the first ``size`` cells of a :data:`TOKEN_DATA` array (no copy): the
    samplers applied to it reorder, shrink and select within ``cells``."""
    import llama_cpp

    data = cells.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data))
    return llama_cpp.llama_token_data_array(data, size, -1, False)
