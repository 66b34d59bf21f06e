"""llama.cpp's CPU kernel choice that decides whether a generating token's arithmetic depends on its neighbours.

ggml's CPU backend multiplies K-quant weights (Q2_K to Q6_K and some IQ types: in Gemma 3 270M Q4_K_M the attention
output and FFN down projections) with a tiled kernel from :data:`TILED_MIN_ROWS` rows per call on, and with the
one-row dot product below that. The two round differently. A prompt is always read in chunks of at least
:data:`~slm_runtime.engines.batch_plan.MIN_CHUNK` tokens (tiled, alone or not), and a generating call carries one row
per slot at most, so with fewer slots than that floor every generating token takes the dot product, alone or not.
From that many slots on, a sequence generating beside the others would get other log-probabilities than alone (0.885
in a logit over 24 steps of 8 rows, raw API).

There the batch-invariant mode chooses per call (:class:`TiledGate`): ggml leaves the tiled kernel to a weight's own
repacked kernel when the weight's ``extra`` field is set (``src0->extra != NULL`` in ggml-cpu/tiled/tiled.cpp; for
weights in the plain CPU buffer nothing else reads that field). The gate sets it on the K-quant weights before a
generating call, so every generating row takes the dot product, and clears it before a prompt call, which keeps the
faster tiled kernel (a 480-token prompt 0.78x the dot product's time). Where the gate cannot be built (ggml's tensor
layout not as expected) the process switch ``GGML_CPU_TILED_MM=0`` turns the tiled kernel off for every call
instead; ggml reads it once per process, at its first matrix product. Measurements: docs/batching.md.
"""

from __future__ import annotations

import ctypes
import os
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")

TILED_SWITCH = "GGML_CPU_TILED_MM"

TILED_MIN_ROWS = 8
"""The fewest rows per call that take ggml's tiled kernel (``ggml_tiled_min_batch`` in ggml-cpu/tiled/tiled.cpp, as
vendored by llama-cpp-python 0.3.36)."""


def needs_gate(batch_invariant: bool, parallel: int) -> bool:
    """Whether generating calls can reach the tiled kernel's floor and must be kept off it (:class:`TiledGate`)."""
    return batch_invariant and parallel >= TILED_MIN_ROWS


class GgmlTensor(ctypes.Structure):
    """The head of ggml's ``struct ggml_tensor`` (ggml.h as vendored by llama-cpp-python 0.3.36), read-only except
    for ``extra``."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
    ]


EXTRA_OFFSET = GgmlTensor.extra.offset
WEIGHT_NAME = re.compile(rb"[A-Za-z0-9_.]+\.weight")


class TiledGate:
    """Sets or clears ``extra`` on a model's K-quant weights: set, ggml skips its tiled kernel for them.

    Only the decoder thread calls :meth:`allow`, between its llama_decode calls (a change during a call would split
    ggml's threads across two kernels). The model's weights belong to this engine alone: the embedding endpoint loads
    its own copy."""

    def __init__(self, weights: Sequence[int]) -> None:
        self._extras = tuple(ctypes.c_void_p.from_address(address + EXTRA_OFFSET) for address in weights)
        """Each weight's ``extra`` field, made once: a switch writes them and creates nothing."""
        self._marker = ctypes.create_string_buffer(8)
        self._allowed = True

    @property
    def weights(self) -> int:
        return len(self._extras)

    def allow(self, allowed: bool) -> None:
        if allowed == self._allowed:
            return
        value = None if allowed else ctypes.addressof(self._marker)
        for extra in self._extras:
            extra.value = value
        self._allowed = allowed


def kquant_types() -> frozenset[int]:
    """The weight types ggml's tiled kernel takes (``ggml_tiled_supported``)."""
    import llama_cpp

    names = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S"]
    names += ["IQ1_S", "IQ1_M"]
    return frozenset(int(getattr(llama_cpp, f"GGML_TYPE_{name}")) for name in names)


def find_kquant_weights(model: Any, threads: int) -> list[int] | None:
    """The addresses of ``model``'s K-quant weights, read off one token's graph in a throwaway context: an eval
    callback is asked about every node before any is computed. None when ggml's tensors do not have the layout
    :class:`GgmlTensor` expects (checked against ``ggml_get_name`` on the first node); the process switch is then
    turned off from that first question, before the first matrix product reads it.

    The throwaway decode runs on a thread of its own (:func:`on_own_thread`)."""
    return on_own_thread(lambda: _find_kquant_weights(model, threads))


def on_own_thread(work: Callable[[], T]) -> T:
    """Run ``work`` (llama.cpp computing) on a thread that ends with it, and return its result or raise its error.

    ggml computes with OpenMP, whose thread team belongs to the calling thread and outlives the call. A team left on
    another long-lived thread than the decoder's cost generation about a quarter of its speed from then on (single
    stream at 8 slots 49 against 62 tokens/s after a throwaway decode on the loading thread; at 1 slot 45 against 61
    after one embedding on a server pool thread); the team ends with this thread."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(work())
        except BaseException as exc:  # re-raised on the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="llama-cpp-compute")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return results[0]


def _find_kquant_weights(model: Any, threads: int) -> list[int] | None:
    import llama_cpp
    from llama_cpp import _ggml, _internals

    get_name = _ggml.libggml.ggml_get_name
    get_name.argtypes, get_name.restype = [ctypes.c_void_p], ctypes.c_void_p
    types = kquant_types()
    found: dict[int, None] = {}  # in graph order
    state = {"checked": False, "broken": False}

    def look(node_address: int, ask: bool, _user: Any) -> bool:
        if not ask or state["broken"]:
            return False
        if not state["checked"]:
            state["checked"] = True
            if get_name(node_address) - node_address != GgmlTensor.name.offset:
                state["broken"] = True
                os.environ[TILED_SWITCH] = "0"
                return False
        for source in GgmlTensor.from_address(node_address).src:
            if source and source not in found:
                tensor = GgmlTensor.from_address(source)
                if tensor.type in types and WEIGHT_NAME.fullmatch(tensor.name):
                    found[source] = None
        return False

    callback = llama_cpp.ggml_backend_sched_eval_callback(look)
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = params.n_batch = params.n_ubatch = 16
    params.n_seq_max = 1
    params.n_threads = params.n_threads_batch = threads
    params.cb_eval = callback
    context = _internals.LlamaContext(model=model, params=params, verbose=False)
    batch = llama_cpp.llama_batch_init(1, 0, 1)
    try:
        batch.n_tokens = 1
        batch.token[0] = int(llama_cpp.llama_vocab_bos(model.vocab))
        batch.pos[0] = 0
        batch.n_seq_id[0] = 1
        batch.seq_id[0][0] = 0
        batch.logits[0] = 1
        decoded = llama_cpp.llama_decode(context.ctx, batch) == 0
    finally:
        llama_cpp.llama_batch_free(batch)
        context.close()
    if state["broken"] or not decoded or any(GgmlTensor.from_address(w).extra for w in found):
        return None
    return list(found)
