"""The numpy draw samples from exactly the distribution llama.cpp's own sampler chain samples from.

The reference is the real llama.cpp library (llama-cpp-python's build): the chain ``choice_chain`` makes for the
request (penalties, top-k, top-p, min-p, temperature, dist) is applied to a candidate array of the same logits; the
tokens it leaves and the probabilities its ``dist`` writes are compared with what :class:`TokenDraw` would draw
from, token after token, both having accepted the same tokens. Then draws are compared with draws. No model is
needed (tests/e2e/runtime/test_sampling_draw.py does the same on Gemma 3's logits).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

import llama_cpp
import numpy as np
import pytest

from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.draw import WIDEST_TOP_K, TokenDraw, fast_draw_applies
from slm_runtime.engines.greedy import GreedyPicker
from slm_runtime.engines.llama_cpp import make_sampler
from slm_runtime.engines.samplers import ChainSampler, apply_to_row, choice_chain

VOCAB = 6000
"""Two whole rows of the draw's column grid and a partial one (2048 columns)."""

PENALTIES = {"repeat_penalty": 1.3, "frequency_penalty": 0.1, "presence_penalty": 0.2, "repeat_last_n": 16}
NO_PENALTIES = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}


class Reference:
    """llama.cpp's chain for ``params`` (with penalties over the vocabulary), applied to whole rows of logits."""

    def __init__(self, params: SamplingParams, seed: int, vocab: int = VOCAB) -> None:
        self.chain = choice_chain(params, seed, penalties=vocab)

    def apply(self, logits: np.ndarray) -> tuple[Distribution, int]:
        """The tokens the chain keeps with the probabilities its dist gives them, and the token it draws."""
        kept, selected = apply_to_row(self.chain, logits)
        return Distribution(kept["id"], kept["p"]), int(kept["id"][selected])

    def accept(self, token: int) -> None:
        llama_cpp.llama_sampler_accept(self.chain, token)

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)


class Distribution:
    """Tokens and their probabilities, by token id."""

    def __init__(self, ids: np.ndarray, probabilities: np.ndarray) -> None:
        order = np.argsort(ids)
        self.ids = ids[order].astype(np.int64)
        self.p = probabilities[order].astype(np.float64)

    def __contains__(self, token: int) -> bool:
        return bool(np.isin(token, self.ids))

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def ours(draw: TokenDraw, logits: np.ndarray) -> Distribution:
    return Distribution(*draw.distribution(logits))


def assert_same_distribution(mine: Distribution, theirs: Distribution) -> None:
    assert mine.ids.tolist() == theirs.ids.tolist()
    off = ~np.isclose(mine.p, theirs.p, rtol=1e-5, atol=1e-7)
    assert not off.any(), f"tokens {mine.ids[off][:5]}: {mine.p[off][:5]} here, {theirs.p[off][:5]} in llama.cpp"


def logit_rows(seed: int, steps: int, vocab: int = VOCAB) -> Iterator[np.ndarray]:
    """Model-like rows (a few strong tokens that come back, so the penalties bite), with edge cases mixed in: logits
    rounded to a coarse grid (ties everywhere, across the k-th place and the top-p cut too), rows where fewer tokens
    than top-k are finite (-inf elsewhere), one finite token, and every logit equal."""
    rng = np.random.default_rng(seed)
    favourites = rng.choice(vocab, size=8, replace=False)
    for step in range(steps):
        logits = rng.normal(-2.0, 2.5, vocab).astype(np.float32)
        logits[favourites] = rng.normal(6.0, 1.5, favourites.size)
        kind = step % 8
        if kind == 3:
            logits = np.round(logits * 2) / 2
        elif kind == 5:
            logits[rng.random(vocab) < 0.995] = -np.inf
        elif kind == 6:
            logits[:] = -np.inf
            logits[favourites[0]] = 1.0
        elif kind == 7:
            logits[:] = np.float32(0.5)
        yield logits.astype(np.float32)


GRID = list(
    itertools.product([0, 1, 40], [0.5, 0.9, 1.0], [0.0, 0.05, 0.1], [0.3, 0.8, 1.5], [False, True]),
)


@pytest.mark.parametrize(("top_k", "top_p", "min_p", "temperature", "penalized"), GRID)
def test_candidates_and_probabilities_are_llama_cpps(
    top_k: int, top_p: float, min_p: float, temperature: float, penalized: bool
) -> None:
    params = SamplingParams(
        max_tokens=8,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        **(PENALTIES if penalized else NO_PENALTIES),
    )
    if not fast_draw_applies(params, VOCAB, constrained=False):
        assert top_k == 0 and top_p < 1  # the one case left to the chain: top-p over the whole vocabulary
        return
    reference = Reference(params, seed=3)
    draw = TokenDraw(params, seed=3, n_vocab=VOCAB)
    try:
        for logits in logit_rows(seed=top_k + int(100 * top_p) + int(1000 * min_p), steps=48):
            before = logits.copy()
            theirs, token = reference.apply(logits)
            assert_same_distribution(ours(draw, logits), theirs)
            assert np.array_equal(logits, before), "the draw must not modify llama.cpp's logits"
            reference.accept(token)
            draw.remember(token)
    finally:
        reference.close()
        draw.close()


def test_ties_across_a_cut_are_settled_as_llama_cpp_settles_them() -> None:
    # Tied logits across the k-th place, then across the top-p cut: which of the tied tokens stay is llama.cpp's
    # sort's choice, and the draw defers to it.
    across_k = np.full(VOCAB, -5.0, dtype=np.float32)
    across_k[[10, 700, 2100, 4500, 5999]] = [3.0, 2.0, 2.0, 2.0, 2.0]
    across_p = np.full(VOCAB, -30.0, dtype=np.float32)
    across_p[[7, 4000, 4001]] = [1.0, 0.0, 0.0]  # p = 0.58, 0.21, 0.21; top-p 0.7 cuts between the two 0.21
    for logits, params in (
        (across_k, SamplingParams(max_tokens=1, top_k=3, top_p=1.0, **NO_PENALTIES)),
        (across_p, SamplingParams(max_tokens=1, top_k=40, top_p=0.7, **NO_PENALTIES)),
    ):
        reference = Reference(params, seed=1)
        draw = TokenDraw(params, seed=1, n_vocab=VOCAB)
        try:
            theirs, _ = reference.apply(logits)
            assert_same_distribution(ours(draw, logits), theirs)
            assert draw.deferred == 1
        finally:
            reference.close()
            draw.close()


@pytest.mark.parametrize("top_k", [0, 40])
def test_a_logit_exactly_at_the_min_p_floor_stays(top_k: int) -> None:
    # 0.057: numpy's float32 log differs from the C library's logf in the last bit here.
    params = SamplingParams(max_tokens=1, top_k=top_k, top_p=1.0, min_p=0.057, **NO_PENALTIES)
    logits = np.random.default_rng(1).normal(-10.0, 1.0, VOCAB).astype(np.float32)
    logits[[5, 50]] = [2.5, 1.0]
    floor = np.float32(logits[5] + c_logf(0.057))  # llama.cpp's min-p floor, in float32
    reference = Reference(params, seed=1)
    draw = TokenDraw(params, seed=1, n_vocab=VOCAB)
    try:
        for value in (np.nextafter(floor, -np.inf), floor, np.nextafter(floor, np.inf)):
            logits[500] = value
            theirs, _ = reference.apply(logits)
            assert (500 in theirs) == (value >= floor)
            assert_same_distribution(ours(draw, logits), theirs)
        assert draw.deferred == 0
    finally:
        reference.close()
        draw.close()


def c_logf(value: float) -> np.float32:
    """The C library's ``logf`` (the one llama.cpp's min-p calls)."""
    logf = ctypes.CDLL(ctypes.util.find_library("m")).logf
    logf.argtypes = [ctypes.c_float]
    logf.restype = ctypes.c_float
    return np.float32(logf(value))


def test_a_top_p_sum_within_rounding_of_top_p_is_left_to_llama_cpp() -> None:
    logits = np.full(VOCAB, -40.0, dtype=np.float32)
    logits[[3, 30]] = [0.0, -0.7]
    first = 1 / (1 + math.exp(-0.7))  # the first token's probability: top-p exactly there
    params = SamplingParams(max_tokens=1, top_k=40, top_p=first, **NO_PENALTIES)
    reference = Reference(params, seed=1)
    draw = TokenDraw(params, seed=1, n_vocab=VOCAB)
    try:
        theirs, _ = reference.apply(logits)
        assert_same_distribution(ours(draw, logits), theirs)
        assert draw.deferred == 1
    finally:
        reference.close()
        draw.close()


def test_steps_without_ties_are_settled_here() -> None:
    params = SamplingParams(max_tokens=1, **PENALTIES)
    reference = Reference(params, seed=2)
    draw = TokenDraw(params, seed=2, n_vocab=VOCAB)
    rng = np.random.default_rng(2)
    try:
        for _ in range(200):
            logits = rng.normal(0.0, 3.0, VOCAB).astype(np.float32)
            theirs, token = reference.apply(logits)
            assert_same_distribution(ours(draw, logits), theirs)
            reference.accept(token)
            draw.remember(token)
    finally:
        reference.close()
        draw.close()
    assert draw.deferred == 0


def test_with_no_finite_logit_both_take_the_last_candidate() -> None:
    logits = np.full(VOCAB, -np.inf, dtype=np.float32)
    for top_k in (0, 40):
        params = SamplingParams(max_tokens=1, top_k=top_k, top_p=1.0, **NO_PENALTIES)
        reference = Reference(params, seed=4)
        draw = TokenDraw(params, seed=4, n_vocab=VOCAB)
        try:
            assert draw.pick(logits) == reference.apply(logits)[1]
        finally:
            reference.close()
            draw.close()


# --- draws against draws ------------------------------------------------------------------------------------------

DRAWS = 4000
CRITICAL_Z = 3.0902
"""The standard normal's 0.999 quantile: a correct sampler fails the homogeneity test one time in a thousand (never,
with the fixed seeds here)."""

GEOMETRIC = np.full(1024, -20.0, dtype=np.float32)
GEOMETRIC[np.arange(40) * 23 + 17] = -0.35 * np.arange(40)
"""Forty candidates with probabilities falling by a factor e^-0.35 each (at temperature 1): top-p 0.9 keeps seven."""

DRAW_PARAMS = SamplingParams(max_tokens=1, temperature=0.8, top_k=40, top_p=0.9, **NO_PENALTIES)


def chain_draws(params: SamplingParams, logits: np.ndarray, count: int, seed: int) -> list[int]:
    reference = Reference(params, seed, vocab=len(logits))
    try:
        return [reference.apply(logits)[1] for _ in range(count)]
    finally:
        reference.close()


def numpy_draws(params: SamplingParams, logits: np.ndarray, count: int, seed: int) -> list[int]:
    draw = TokenDraw(params, seed, len(logits))
    try:
        return [draw.pick(logits) for _ in range(count)]
    finally:
        draw.close()


def same_distribution(first: Sequence[int], second: Sequence[int]) -> bool:
    """Pearson's chi-square test that two equally sized samples come from one distribution (tokens seen fewer than
    ten times in both together pooled into one bin), at the 0.001 level (Wilson-Hilferty's critical value)."""
    a, b = Counter(first), Counter(second)
    bins: list[tuple[int, int]] = []
    rare = [0, 0]
    for token in set(a) | set(b):
        if a[token] + b[token] < 10:
            rare[0] += a[token]
            rare[1] += b[token]
        else:
            bins.append((a[token], b[token]))
    if sum(rare):
        bins.append((rare[0], rare[1]))
    statistic = sum((x - y) ** 2 / (x + y) for x, y in bins)
    df = len(bins) - 1
    if df == 0:
        return True
    critical = df * (1 - 2 / (9 * df) + CRITICAL_Z * math.sqrt(2 / (9 * df))) ** 3
    return statistic < critical


def test_draws_follow_the_chains_distribution() -> None:
    mine = numpy_draws(DRAW_PARAMS, GEOMETRIC, DRAWS, seed=11)
    theirs = chain_draws(DRAW_PARAMS, GEOMETRIC, DRAWS, seed=12)
    assert len(set(theirs)) == 7  # the top-p cut
    assert set(mine) == set(theirs)
    assert same_distribution(mine, theirs)


@pytest.mark.parametrize(
    "wrong",
    [
        {"temperature": 1.0},  # the temperature applied wrongly
        {"temperature": 0.65},
        {"top_p": 0.93},  # a top-p cut that keeps one token more
        {"top_k": 6},  # one token fewer
    ],
)
def test_the_comparison_catches_a_wrong_distribution(wrong: dict[str, Any]) -> None:
    """The test above has the power to see a sampler that is wrong: the draw made with a wrong parameter fails it."""
    params = replace(DRAW_PARAMS, **wrong)
    mine = numpy_draws(params, GEOMETRIC, DRAWS, seed=11)
    theirs = chain_draws(DRAW_PARAMS, GEOMETRIC, DRAWS, seed=12)
    assert not same_distribution(mine, theirs)


# --- seeds and where the draw is used ---------------------------------------------------------------------------


def test_the_same_seed_draws_the_same_tokens() -> None:
    params = SamplingParams(max_tokens=1, temperature=1.0, **PENALTIES)
    rows = list(logit_rows(seed=9, steps=64))
    first = numpy_draws_over(params, rows, seed=5)
    assert numpy_draws_over(params, rows, seed=5) == first
    assert numpy_draws_over(params, rows, seed=6) != first


def numpy_draws_over(params: SamplingParams, rows: list[np.ndarray], seed: int) -> list[int]:
    draw = TokenDraw(params, seed, VOCAB)
    try:
        return [draw.pick(logits) for logits in rows]
    finally:
        draw.close()


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({}, TokenDraw),  # the defaults: temperature 0.8, top-k 40, top-p 0.9
        ({"top_k": 0, "top_p": 1.0, "min_p": 0.05}, TokenDraw),
        ({"top_k": VOCAB, "top_p": 1.0}, TokenDraw),
        ({"top_k": 0, "top_p": 0.9}, ChainSampler),
        ({"top_k": VOCAB, "top_p": 0.9}, ChainSampler),
        ({"top_k": WIDEST_TOP_K + 1}, ChainSampler),
        ({"temperature": 0.0}, GreedyPicker),
    ],
)
def test_make_sampler_draws_in_numpy_where_it_is_exact(changes: dict[str, Any], kind: type) -> None:
    sampler = make_sampler(None, VOCAB, SamplingParams(max_tokens=1, **changes), 1, None, None)
    try:
        assert isinstance(sampler, kind)
    finally:
        sampler.close()
