"""Sampling under a grammar without checking the whole vocabulary against it at every token.

llama.cpp's grammar sampler checks every candidate it is given against the grammar, decoding each token's text
through the grammar's stacks. In the sampler chain (:func:`~slm_runtime.engines.samplers.sampler_chain` with a
grammar) it does so for all 262,144 tokens of Gemma 3 at every step, about 40 ms per token on one core: a forced tool
call ran at a third of the speed of free text, and a quarter with four sequences (``bench/constrained_decoding.py``).

:class:`GrammarSampler` proceeds as llama.cpp's ``common_sampler_sample`` does, then narrows its fallback:

1. choose with the chain *without* the grammar (penalties, then greedy or the seeded draw), and check that one token
   against the grammar (the grammar sampler applied to a one-candidate array): inside a JSON value the model mostly
   proposes what the grammar allows, and the token then costs one check;
2. when the grammar refuses it, check only the candidates with the highest logits (:data:`POOLS`) and choose among
   those it allows;
3. when that does not settle it, check the tokens whose first byte the grammar allows now
   (:class:`~slm_runtime.engines.first_bytes.FirstByteIndex`: exactly the whole-vocabulary mask, for a fraction
   of its cost where the grammar is narrow, as inside a function name) and choose among them.

The grammar's state and the chain's (penalty window, random draws) advance with ``llama_sampler_accept`` exactly
once per token, with the token chosen; the chain draws one random number per token. A draw in step 1 happens on a
clone of the chain, which replaces the chain when its token is allowed and is dropped otherwise.

What comes out, against masking the whole vocabulary before choosing (:func:`~slm_runtime.engines.samplers.
sampler_chain` with the grammar):

- greedy requests: the same token, always. Step 1's highest logit, when allowed, is the highest allowed one;
  step 2 keeps a pool's best allowed token only when it beats every logit outside the pool (penalties, which may
  only lower logits here, cannot lift an outside token above it); step 3 is the full mask.
- temperature > 0: a draw the grammar allows is kept and a refused one is redrawn from the masked distribution, as
  llama.cpp does, so tokens the model proposed on its own are slightly favoured; the redraw is among the
  :data:`SAMPLED_POOL` most likely tokens the grammar allows (as if a top-k of that size came before the grammar),
  and over the whole vocabulary only when none of them is allowed.
"""

from __future__ import annotations

import ctypes
import math
from typing import TYPE_CHECKING, Any

import numpy as np

from slm_runtime.engines.greedy import GreedyPicker, fast_greedy_applies
from slm_runtime.engines.llama_native import TOKEN_DATA, candidates, quick_calls

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from slm_runtime.engines.base import SamplingParams
    from slm_runtime.engines.first_bytes import FirstByteIndex
    from slm_runtime.engines.samplers import StepLogits

__all__ = ["POOLS", "SAMPLED_POOL", "GrammarRejectedAllError", "GrammarSampler"]

POOLS = (64, 4096)
"""How many of the highest-logit candidates step 2 checks for a greedy request, widening in turn. On Gemma 3 270M
producing forced tool calls most refused tokens are replaced by one of the 64 best and a few need thousands; the
grammar checks about 6,500 candidates per millisecond."""

SAMPLED_POOL = POOLS[-1]
"""The candidates a refused draw (temperature > 0) is redrawn from, when any of them is allowed."""


class GrammarRejectedAllError(RuntimeError):
    """The grammar allows no token of the vocabulary here (accepting one would abort llama.cpp)."""


class GrammarSampler:
    """A chain (penalties and the choice, no grammar) and a grammar sampler; it owns both (:meth:`close`)."""

    def __init__(self, params: SamplingParams, chain: Any, grammar: Any, index: FirstByteIndex, n_vocab: int) -> None:
        self._chain = chain
        self._grammar = grammar
        self._index = index
        self._quick = quick_calls()
        self._greedy = params.temperature <= 0.0
        self._picker = (
            GreedyPicker(params.repeat_penalty, params.repeat_last_n)
            if fast_greedy_applies(params, constrained=False)
            else None
        )
        """Step 1 of a greedy request in numpy (the chain's own choice, without copying the logits)."""
        lowering = params.repeat_penalty >= 1.0 and params.frequency_penalty >= 0.0 and params.presence_penalty >= 0.0
        self._pools = () if not lowering else POOLS if self._greedy else (SAMPLED_POOL,)
        self._cells = np.zeros(n_vocab, dtype=TOKEN_DATA)
        self.refused = 0
        """Tokens step 1 proposed and the grammar refused."""
        self.masked = 0
        """Refused tokens that step 3 chose."""

    def choose(self, step: StepLogits) -> int:
        row = step.row()
        quick = self._quick
        if self._picker is not None:
            token, draw = self._picker.peek(row), None
        else:
            draw = quick.clone(self._chain)
            token = int(quick.sample(draw, step.ctx, step.index))  # applies and accepts, on the clone
        if self._allows(token):
            if draw is None:
                quick.accept(self._chain, token)
            else:
                quick.free(self._chain)
                self._chain = draw
        else:
            if draw is not None:
                quick.free(draw)
            self.refused += 1
            token = self._choose_masked(row)
            quick.accept(self._chain, token)
        if self._picker is not None:
            self._picker.remember(token)
        quick.accept(self._grammar, token)
        return token

    def _allows(self, token: int) -> bool:
        """Whether the grammar, in its current state, accepts ``token`` next (a one-candidate check)."""
        cells = self._cells[:1]
        cells["id"] = token
        cells["logit"] = 0.0
        self._quick.apply(self._grammar, ctypes.byref(candidates(cells, 1)))
        return not math.isinf(float(cells["logit"][0]))

    def _choose_masked(self, row: NDArray[np.float32]) -> int:
        size = row.shape[0]
        if self._pools and self._pools[-1] < size:
            # The widest pool and one more token (the best outside it), unsorted; narrower pools come from them.
            widest = self._pools[-1] + 1
            best = np.argpartition(row, size - widest)[size - widest :]
            values = row[best]
            for width in self._pools:
                order = np.argpartition(values, widest - width - 1)
                outside = float(values[order[widest - width - 1]])
                token = self._choose_in_pool(row, best[order[widest - width :]], outside)
                if token is not None:
                    return token
        self.masked += 1
        ids = self._index.candidates(self._allowed_first_bytes())
        array = self._masked(ids, row[ids])
        if array is None:
            raise GrammarRejectedAllError("the JSON grammar admits no token at this point of the output")
        self._quick.apply(self._chain, ctypes.byref(array))
        return self._selected(array)

    def _choose_in_pool(self, row: NDArray[np.float32], pool: NDArray[np.intp], outside: float) -> int | None:
        """The choice among the allowed tokens of ``pool`` (``outside``: the highest logit outside it), or None
        when it does not settle the choice (see the module docstring)."""
        array = self._masked(pool, row[pool])
        if array is None:
            return None
        self._quick.apply(self._chain, ctypes.byref(array))
        token = self._selected(array)
        if self._greedy and not float(self._cells["logit"][array.selected]) > outside:
            return None  # an allowed token outside the pool may rank higher (greedy has no draw to undo)
        return token

    def _masked(self, ids: NDArray[Any], logits: NDArray[np.float32]) -> Any | None:
        """The candidate array of ``ids`` after the grammar, or None when it allows none of them."""
        size = ids.shape[0]
        cells = self._cells[:size]
        cells["id"] = ids
        cells["logit"] = logits
        cells["p"] = 0.0
        array = candidates(self._cells, size)
        self._quick.apply(self._grammar, ctypes.byref(array))
        return array if np.isfinite(cells["logit"]).any() else None

    def _selected(self, array: Any) -> int:
        selected = int(array.selected)
        if not 0 <= selected < int(array.size) or math.isinf(float(self._cells["logit"][selected])):
            raise GrammarRejectedAllError("the JSON grammar admits no token at this point of the output")
        return int(self._cells["id"][selected])

    def _allowed_first_bytes(self) -> NDArray[np.bool_]:
        """Which bytes the grammar allows next: its verdict on each probe token, True for bytes without one."""
        index = self._index
        probes = index.probes.shape[0]
        cells = self._cells[:probes]
        cells["id"] = index.probes
        cells["logit"] = 0.0
        self._quick.apply(self._grammar, ctypes.byref(candidates(self._cells, probes)))
        allowed = np.ones(256, dtype=np.bool_)
        allowed[index.probe_bytes] = np.isfinite(cells["logit"])
        return allowed

    def close(self) -> None:
        for sampler in (self._chain, self._grammar):
            if sampler is not None:
                self._quick.free(sampler)
        self._chain = self._grammar = None
