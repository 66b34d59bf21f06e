"""Sampling at temperature > 0 in numpy: llama.cpp's distribution, drawn from the few tokens it can keep.

llama.cpp's ``llama_sampler_sample`` copies all 262,144 logits of Gemma 3 into a candidate array and runs the
chain of :func:`~slm_runtime.engines.samplers.choice_chain` over it: penalties (a hash look-up per candidate),
top-k, top-p, min-p, temperature, a seeded draw; 0.5 to 2 ms per token on the decoder thread, per sequence. Yet
with a top-k (40 by default) only the best few dozen tokens can be drawn. :class:`TokenDraw` reads the logits
once to find them and computes the same cuts on those alone:

1. penalties: llama.cpp's own penalties sampler, applied to a candidate array of just the tokens in the window
   (its apply changes each candidate on its own, by that token's count), so the penalized logits are the very
   float32 values the chain computes; llama.cpp's buffer is never written;
2. the region: the tokens whose penalized logit reaches a threshold that provably keeps every token the cuts can
   keep: for a top-k, the (k+1)-th highest of the row's 2,048 column maxima (:class:`_Region`), which at least
   k + 1 tokens reach; when the penalties lowered some of them below it, the (k + 1 + window)-th, which k + 1
   tokens reach however the window was penalized (the (k+1)-th token shows a tie across the k-th place); for
   min-p over the whole vocabulary, the highest penalized logit plus ``logf(min_p)``. One vectorized pass over the
   row for the column maxima, then only the columns whose maximum reaches the threshold are read;
3. top-k: the k highest penalized logits, sorted;
4. top-p (on the probabilities before temperature, as the chain orders it): llama.cpp's float32 arithmetic in its
   order (a softmax over the k sorted tokens with float sums, then a running float sum until it reaches top_p).
   The exponentials are float64 rounded to float32; glibc's ``expf`` differs from that in the last bit for a few
   arguments in ten thousand, so the sums here may differ from llama.cpp's by a bounded few units in the last place
   (:func:`_rounding_bound`);
5. min-p: a comparison of logits, the highest plus ``logf(min_p)`` in float32 with the C library's ``logf`` (the one
   llama.cpp calls; numpy's float32 log differs from it in the last bit for some arguments): exact;
6. temperature and the draw: the logits divided by the temperature in float32, their exponentials in float64, and
   the first token whose running sum reaches a uniform draw from a numpy ``Generator`` seeded with the request's
   seed times the total: the inverse-CDF draw llama.cpp's ``dist`` makes with its own generator. The probabilities
   are llama.cpp's up to the rounding of its float exponentials (relative 1e-7); the same seed repeats the tokens.

Where the arithmetic here cannot settle the set (a tie across the k-th place, or across the top-p cut; a top-p sum
within the rounding bound of top_p; a logit that is not finite), llama.cpp decides: its own cuts
(:func:`~slm_runtime.engines.samplers.cuts_chain`) run over the whole vocabulary in token order with the penalized
logits, as ``llama_sampler_sample`` would run them, and the draw is made from what they leave (:attr:`TokenDraw.
deferred` counts these steps: about one in a thousand on Gemma 3 270M).

:func:`fast_draw_applies` says where this applies; the chain samples elsewhere: under a grammar; for a top-p over the
whole vocabulary (top-k 0), a cut that depends on a float32 sum of 262,144 exponentials in token order, whose
rounding only the same exponentials in the same order reproduce; for a top-k above :data:`WIDEST_TOP_K`.
"""

from __future__ import annotations

import collections
import ctypes
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from slm_runtime.engines.llama_native import TOKEN_DATA, candidates, quick_calls
from slm_runtime.engines.samplers import apply_to_row, cuts_chain, penalties_sampler

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from slm_runtime.engines.base import SamplingParams
    from slm_runtime.engines.samplers import StepLogits

__all__ = ["WIDEST_TOP_K", "Candidates", "TokenDraw", "fast_draw_applies"]

WIDEST_TOP_K = 1024
"""The largest top-k drawn here; a wider one samples through llama.cpp's chain (the region and its sort grow with k,
and so does the rounding bound of the top-p sums)."""

_COLUMNS = 2048
"""Columns of the grid a row is seen as (:class:`_Region`): 128 rows of Gemma 3's vocabulary; the column maxima
cost one vectorized pass over the row."""

_BLOCK = 4096
"""Weights summed per block when drawing from a large candidate set (one running sum over a block, not the set)."""


def fast_draw_applies(params: SamplingParams, n_vocab: int, constrained: bool) -> bool:
    """Whether :class:`TokenDraw` draws from exactly the distribution llama.cpp's chain would for these parameters
    (``params.top_k`` as the engine clamped it: 0 to ``n_vocab``)."""
    if constrained or params.temperature <= 0.0 or not np.float32(params.temperature) > 0:
        return False
    if not np.float32(params.min_p) <= 1:
        return False  # min-p above 1 keeps one of the tied best tokens: llama.cpp's sort decides which
    if _whole_vocabulary(params.top_k, n_vocab):
        return bool(np.float32(params.top_p) >= 1)
    return params.top_k <= WIDEST_TOP_K


def _whole_vocabulary(top_k: int, n_vocab: int) -> bool:
    return top_k <= 0 or top_k >= n_vocab


@dataclass(frozen=True, slots=True)
class Candidates:
    """The tokens the cuts keep at one step and their penalized logits (before temperature), in no promised order
    (llama.cpp's own where its cuts decided: its ``dist`` falls back on the last one)."""

    ids: NDArray[np.int64]
    logits: NDArray[np.float32]


class TokenDraw:
    """One generation's draws at temperature > 0 without a grammar; owns llama.cpp's penalties sampler and, once a
    step needs it, a chain of its cuts (:meth:`close`)."""

    def __init__(self, params: SamplingParams, seed: int, n_vocab: int) -> None:
        self.params = params
        self._quick = quick_calls()
        self._top_k = 0 if _whole_vocabulary(params.top_k, n_vocab) else params.top_k
        top_p = np.float32(params.top_p)
        self._top_p = top_p if top_p < 1 else None
        min_p = np.float32(params.min_p)
        self._log_min_p = _c_logf(min_p) if min_p > 0 else None
        temperature = np.float32(params.temperature)
        self._temperature = temperature if temperature != 1 else None
        self._rng = np.random.default_rng(seed)
        last_n = max(params.repeat_last_n, 0)
        penalized = last_n > 0 and not (
            np.float32(params.repeat_penalty) == 1
            and np.float32(params.frequency_penalty) == 0
            and np.float32(params.presence_penalty) == 0
        )
        self._penalties: Any | None = penalties_sampler(n_vocab, params) if penalized else None
        self._window: collections.deque[int] = collections.deque(maxlen=last_n or 1)
        self._cuts: Any | None = None
        self._every_token: NDArray[np.int64] | None = None
        self.deferred = 0
        """Steps whose candidates llama.cpp's own cuts settled (see the module docstring)."""

    # --- the sampler interface ------------------------------------------------------------------------------

    def choose(self, step: StepLogits) -> int:
        """:meth:`pick` on the step's logits (the decoder's sampler interface)."""
        return self.pick(step.row())

    def pick(self, row: NDArray[np.float32]) -> int:
        """Draw the next token from this step's logits (not modified) and remember it for the penalties."""
        kept = self.candidates(row)
        weights = self._weights(kept.logits)
        token = int(kept.ids[_draw(weights, self._rng.random())])
        self.remember(token)
        return token

    def remember(self, token: int) -> None:
        """Put the token emitted in the penalty window (llama.cpp's and the copy of its keys kept here)."""
        if self._penalties is not None:
            self._quick.accept(self._penalties, token)
            self._window.append(token)

    def close(self) -> None:
        for sampler in (self._penalties, self._cuts):
            if sampler is not None:
                self._quick.free(sampler)
        self._penalties = self._cuts = None

    # --- the distribution -----------------------------------------------------------------------------------

    def distribution(self, row: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """The tokens the next draw is made from and their probabilities (what :meth:`pick` would draw from)."""
        kept = self.candidates(row)
        weights = self._weights(kept.logits)
        total = weights.sum()
        return kept.ids, (weights / total if total > 0 else weights)

    def candidates(self, row: NDArray[np.float32]) -> Candidates:
        """The tokens llama.cpp's penalties, top-k, top-p and min-p keep from this row, with their penalized logits."""
        region = _Region(row, *self._penalized(row))
        if not np.isfinite(region.highest):
            return self._defer(region)
        if self._top_k:
            return self._top_k_candidates(region)
        if self._log_min_p is not None:
            return self._min_p_candidates(region)
        if self._every_token is None:
            self._every_token = np.arange(row.shape[0])
        return Candidates(self._every_token, region.penalized_row())

    def _penalized(self, row: NDArray[np.float32]) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The tokens in the penalty window and their logits after llama.cpp's penalties sampler."""
        if self._penalties is None or not self._window:
            return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        window = np.fromiter(set(self._window), dtype=np.int64)
        cells = np.zeros(window.shape[0], dtype=TOKEN_DATA)
        cells["id"] = window
        cells["logit"] = row[window]
        self._quick.apply(self._penalties, ctypes.byref(candidates(cells, cells.shape[0])))
        return window, cells["logit"].copy()

    def _top_k_candidates(self, region: _Region) -> Candidates:
        k = self._top_k
        # A threshold k + 1 raw logits reach holds the k + 1 best unless the penalties lowered some below it; one
        # that k + 1 + window raw logits reach holds them always.
        for count in (k + 1, k + 1 + region.window.shape[0]):
            ids, logits = region.above(region.reached_by(count))
            if ids.shape[0] > k:
                break
        size = ids.shape[0]
        best = np.argpartition(logits, size - k - 1)[size - k - 1 :] if size > k + 1 else np.arange(size)
        best = best[np.argsort(logits[best])[::-1]]
        values = logits[best]
        if values[k - 1] == values[k]:
            return self._defer(region)  # llama.cpp's partial sort picks among the tied
        ids, values = ids[best[:k]], values[:k]
        if self._top_p is not None:
            kept = _top_p_cut(values, self._top_p)
            if kept is None:
                return self._defer(region)
            ids, values = ids[:kept], values[:kept]
        if self._log_min_p is not None:
            kept = int(np.count_nonzero(values >= values[0] + self._log_min_p))
            ids, values = ids[:kept], values[:kept]
        return Candidates(ids, values)

    def _min_p_candidates(self, region: _Region) -> Candidates:
        """min-p over the whole vocabulary: the tokens at least ``logf(min_p)`` above the highest penalized logit."""
        assert self._log_min_p is not None
        threshold = np.float32(region.highest + self._log_min_p)
        while True:
            ids, logits = region.above(threshold)
            if ids.shape[0] == 0:  # the best raw tokens were all penalized below it
                threshold = np.float32(threshold - max(1.0, 2 * float(region.highest - threshold)))
                continue
            floor = np.float32(logits.max() + self._log_min_p)
            if floor >= threshold:
                break
            threshold = floor  # the highest raw token was penalized: the floor is lower than the first guess
        keep = logits >= floor
        return Candidates(ids[keep], logits[keep])

    def _defer(self, region: _Region) -> Candidates:
        """llama.cpp's cuts over the whole vocabulary, as ``llama_sampler_sample`` would apply them."""
        self.deferred += 1
        if self._cuts is None:
            self._cuts = cuts_chain(self.params)
        kept, _ = apply_to_row(self._cuts, region.penalized_row())
        return Candidates(kept["id"].astype(np.int64), kept["logit"].copy())

    def _weights(self, logits: NDArray[np.float32]) -> NDArray[np.float64]:
        """llama.cpp's temperature and ``dist``: exp(logit / T - max), not normalized."""
        scaled = logits / self._temperature if self._temperature is not None else logits
        with np.errstate(invalid="ignore"):  # no finite logit: NaN weights, which _draw answers as dist does
            shifted = scaled - scaled.max()
            if shifted.shape[0] > _BLOCK:
                weights: NDArray[np.float64] = np.exp(shifted).astype(np.float64)  # float32 exp: a vocabulary's worth
            else:
                weights = np.exp(shifted.astype(np.float64))
        return weights


class _Region:
    """One step's logits seen as a grid of :data:`_COLUMNS` columns (token i in column i % _COLUMNS; the tokens past
    the last whole row stand alone), with each column's highest logit. A threshold that m column maxima reach is
    reached by at least m tokens, and only the columns whose maximum reaches it need reading to find them: one
    vectorized pass over the row, then a few thousand logits."""

    def __init__(self, row: NDArray[np.float32], window: NDArray[np.int64], penalized: NDArray[np.float32]) -> None:
        self.row = row
        self.window = window
        self.penalized = penalized
        rows = row.shape[0] // _COLUMNS
        self.columns = _COLUMNS if rows else 0
        self.grid = row[: rows * _COLUMNS].reshape(rows, _COLUMNS)
        rest = row[rows * _COLUMNS :]
        self.maxima = np.concatenate((self.grid.max(axis=0), rest)) if rows else rest
        self.highest = self.maxima.max()

    def penalized_row(self) -> NDArray[np.float32]:
        """A copy of the whole row, penalized."""
        logits = self.row.copy()
        logits[self.window] = self.penalized
        return logits

    def reached_by(self, count: int) -> np.float32:
        """A threshold at least ``count`` raw logits reach (-inf when there are not that many columns)."""
        size = self.maxima.shape[0]
        if count > size:
            return np.float32(-np.inf)
        return np.float32(np.partition(self.maxima, size - count)[size - count])

    def above(self, threshold: np.float32) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """Every token whose penalized logit is at least ``threshold``, with that logit (token order)."""
        reached = np.flatnonzero(self.maxima >= threshold)
        columns = reached[reached < self.columns]
        hits = np.flatnonzero(np.take(self.grid, columns, axis=1) >= threshold)
        down, across = np.divmod(hits, max(columns.shape[0], 1))
        alone = reached[reached >= self.columns] - self.columns + self.grid.size
        ids = np.concatenate((down * self.columns + columns[across], alone))
        logits = self.row[ids]
        window, penalized = self.window, self.penalized
        if window.shape[0]:
            at = np.searchsorted(ids, window)
            inside = at < ids.shape[0]
            inside[inside] = ids[at[inside]] == window[inside]
            logits[at[inside]] = penalized[inside]
            raised = ~inside & (penalized >= threshold)
            ids = np.concatenate((ids, window[raised]))
            logits = np.concatenate((logits, penalized[raised]))
            keep = logits >= threshold
            ids, logits = ids[keep], logits[keep]
        return ids, logits


def _top_p_cut(logits: NDArray[np.float32], top_p: np.float32) -> int | None:
    """How many of the sorted ``logits`` llama.cpp's top-p keeps, or None when rounding or a tie could change it.

    llama.cpp (``llama_sampler_top_p_apply`` after a top-k): p_i = expf(l_i - l_0), a float sum of them in order,
    each p_i divided by it; then the first i whose running float sum of p_0..p_i is at least top_p keeps i + 1
    tokens (all of them when none does).
    """
    exps = np.exp((logits - logits[0]).astype(np.float64)).astype(np.float32)
    total = np.add.accumulate(exps)[-1]
    running = np.add.accumulate(exps / total)
    bound = _rounding_bound(logits.shape[0])
    reached = np.flatnonzero(running >= top_p)
    if reached.shape[0] == 0:
        return logits.shape[0] if top_p - running[-1] > bound else None
    last = int(reached[0])
    if running[last] - top_p <= bound or (last > 0 and top_p - running[last - 1] <= bound):
        return None
    if last + 1 < logits.shape[0] and logits[last] == logits[last + 1]:
        return None  # tied tokens on both sides of the cut: llama.cpp's sort order decides which stay
    return last + 1


def _rounding_bound(count: int) -> float:
    """How far a running sum of :func:`_top_p_cut` may lie from llama.cpp's: its exponentials may differ by one unit
    in the last place, then each of the ``count`` float additions of the total and of the running sum, and the
    divisions, round on their own (values at most 1; 2^-24 is half a unit in the last place of 1). Doubled."""
    return float((8 * count + 32) * 2.0**-24)


def _draw(weights: NDArray[np.float64], uniform: float) -> int:
    """The first index whose running sum of ``weights`` reaches ``uniform`` times their total (llama.cpp's ``dist``);
    the last index when the weights have no finite positive total (as ``dist`` falls back there)."""
    size = int(weights.shape[0])
    last = size - 1
    if size <= _BLOCK:
        running = np.cumsum(weights)
        total = running[-1]
        if not (np.isfinite(total) and total > 0):
            return last
        return min(int(np.searchsorted(running, uniform * total)), last)
    blocks = np.add.reduceat(weights, np.arange(0, size, _BLOCK))
    running = np.cumsum(blocks)
    total = running[-1]
    if not (np.isfinite(total) and total > 0):
        return last
    target = uniform * total
    block = min(int(np.searchsorted(running, target)), int(blocks.shape[0]) - 1)
    before = running[block - 1] if block else 0.0
    inside = np.cumsum(weights[block * _BLOCK : (block + 1) * _BLOCK])
    return block * _BLOCK + min(int(np.searchsorted(inside, target - before)), int(inside.shape[0]) - 1)


@functools.cache
def _libm_logf() -> Any:
    function = ctypes.CDLL(None).logf  # the process's: the C library's libm, which llama.cpp's logf calls resolve to
    function.argtypes = [ctypes.c_float]
    function.restype = ctypes.c_float
    return function


def _c_logf(value: np.float32) -> np.float32:
    """The C library's ``logf``, the function llama.cpp's min-p calls."""
    return np.float32(_libm_logf()(float(value)))
