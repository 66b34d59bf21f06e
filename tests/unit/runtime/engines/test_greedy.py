"""The greedy fast path picks exactly what llama.cpp's own sampler chain (penalties, then greedy) picks.

The reference is the real llama.cpp library (llama-cpp-python's build): a chain made by ``sampler_chain`` is
applied to the same logits, token after token, and accepts the same tokens. No model is needed.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator

import llama_cpp
import numpy as np
import pytest

from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.greedy import GreedyPicker, fast_greedy_applies
from slm_runtime.engines.samplers import sampler_chain

VOCAB = 2048


class ReferenceChain:
    """llama.cpp's chain for ``params``, fed logits through a candidate array as ``llama_sampler_sample`` does."""

    def __init__(self, params: SamplingParams) -> None:
        self.chain = sampler_chain(None, VOCAB, params, seed=1, grammar=None)
        self.data = (llama_cpp.llama_token_data * VOCAB)()
        self.view = np.ctypeslib.as_array(self.data)

    def pick(self, logits: np.ndarray) -> int:
        self.view["id"] = np.arange(VOCAB)
        self.view["logit"] = logits
        self.view["p"] = 0.0
        candidates = llama_cpp.llama_token_data_array(self.data, VOCAB, -1, False)
        llama_cpp.llama_sampler_apply(self.chain, ctypes.byref(candidates))
        token = int(self.data[candidates.selected].id)
        llama_cpp.llama_sampler_accept(self.chain, token)
        return token

    def close(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)


def logit_steps(seed: int, steps: int) -> Iterator[np.ndarray]:
    """Logits with ties, zeros and negative leaders, and a small set of strong tokens so that picks repeat."""
    rng = np.random.default_rng(seed)
    favourites = rng.choice(VOCAB, size=6, replace=False)
    for _ in range(steps):
        logits = np.round(rng.normal(-3.0, 1.0, VOCAB), 1).astype(np.float32)
        logits[favourites] = np.round(rng.normal(rng.choice([-0.5, 0.0, 2.0]), 0.3, favourites.size), 1)
        if rng.random() < 0.2:
            logits[:] = np.float32(-1.0)  # everything tied: the first token wins
        yield logits


@pytest.mark.parametrize(
    ("repeat_penalty", "last_n"),
    [(1.0, 64), (1.1, 64), (1.3, 3), (0.8, 16), (1.5, 0)],
)
def test_fast_greedy_picks_what_llama_cpp_picks(repeat_penalty: float, last_n: int) -> None:
    params = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=repeat_penalty, repeat_last_n=last_n)
    reference = ReferenceChain(params)
    picker = GreedyPicker(repeat_penalty, last_n)
    try:
        ours = []
        theirs = []
        for logits in logit_steps(seed=int(repeat_penalty * 10) + last_n, steps=300):
            before = logits.copy()
            ours.append(picker.pick(logits))
            assert np.array_equal(logits, before), "the picker must not modify llama.cpp's logits"
            theirs.append(reference.pick(logits))
    finally:
        reference.close()
    assert ours == theirs
    # The case is not trivial: tokens repeat inside the penalty window.
    assert len(set(ours)) < len(ours) / 2


def test_penalty_changes_the_pick() -> None:
    logits = np.zeros(VOCAB, dtype=np.float32)
    logits[5] = 1.0
    logits[9] = 0.95
    picker = GreedyPicker(1.1, 64)
    assert picker.pick(logits) == 5
    assert picker.pick(logits) == 9  # 5 is penalized to 1.0 / 1.1 < 0.95
    assert picker.pick(logits) == 5  # both penalized now: 1.0 / 1.1 > 0.95 / 1.1


def test_fast_path_only_where_it_is_exact() -> None:
    greedy = SamplingParams(max_tokens=8, temperature=0.0, repeat_penalty=1.1)
    assert fast_greedy_applies(greedy, constrained=False)
    assert not fast_greedy_applies(greedy, constrained=True)
    assert not fast_greedy_applies(SamplingParams(max_tokens=8, temperature=0.7), constrained=False)
    frequency = SamplingParams(max_tokens=8, temperature=0.0, frequency_penalty=0.5)
    assert not fast_greedy_applies(frequency, constrained=False)
    presence = SamplingParams(max_tokens=8, temperature=0.0, presence_penalty=0.5)
    assert not fast_greedy_applies(presence, constrained=False)
