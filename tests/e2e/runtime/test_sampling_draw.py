"""The numpy draw on Gemma 3 270M's own logits: the tokens it draws from and their probabilities are those of
llama.cpp's sampler chain, and a seed repeats a generation through the engine.

The logits are the rows of real generation steps (recorded from the engine's samplers); the reference is the chain
``choice_chain`` makes for the request, applied by llama.cpp to a candidate array of the whole row, its ``dist``
writing the probabilities. Synthetic edge cases and the draws-against-draws test are in
tests/unit/runtime/engines/test_draw.py.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from typing import Any

import llama_cpp as native
import numpy as np
import pytest

from slm_runtime.engines import llama_cpp
from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.draw import TokenDraw, fast_draw_applies
from slm_runtime.engines.llama_cpp import LlamaCppEngine
from slm_runtime.engines.samplers import StepLogits, TokenSampler, apply_to_row, choice_chain

pytestmark = pytest.mark.model

PROMPTS = (
    "The lighthouse keeper opened the logbook and wrote",
    "def fibonacci(n):",
    "Three facts about the moon:\n1.",
)
PENALTIES = {"repeat_penalty": 1.3, "frequency_penalty": 0.1, "presence_penalty": 0.2, "repeat_last_n": 16}
NO_PENALTIES = {"repeat_penalty": 1.0, "frequency_penalty": 0.0, "presence_penalty": 0.0}


class Recording:
    """A sampler that keeps a copy of every row of logits it is given."""

    def __init__(self, inner: TokenSampler, rows: list[np.ndarray]) -> None:
        self.inner = inner
        self.rows = rows

    def choose(self, step: StepLogits) -> int:
        self.rows.append(step.row().copy())
        return self.inner.choose(step)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def gemma_rows(llama_engine: LlamaCppEngine) -> list[np.ndarray]:
    """Twelve rows of logits from each prompt, sampled at temperature 1."""
    rows: list[np.ndarray] = []
    original = llama_cpp.make_sampler

    def recording(*args: Any) -> TokenSampler:
        return Recording(original(*args), rows)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(llama_cpp, "make_sampler", recording)
        for seed, prompt in enumerate(PROMPTS):
            params = SamplingParams(max_tokens=12, temperature=1.0, seed=seed)
            list(llama_engine.stream(0, llama_engine.tokenize(prompt), params, threading.Event()))
    assert len(rows) == 12 * len(PROMPTS)
    assert rows[0].shape == (llama_engine.info.vocab_size,)
    return rows


def distribution(ids: np.ndarray, probabilities: np.ndarray) -> tuple[list[int], np.ndarray]:
    order = np.argsort(ids)
    return ids[order].tolist(), probabilities[order].astype(np.float64)


def grid() -> Iterator[tuple[int, float, float, float, bool]]:
    yield from itertools.product([0, 1, 40], [0.5, 0.9, 1.0], [0.0, 0.05, 0.1], [0.3, 0.8, 1.5], [False, True])


def test_candidates_and_probabilities_are_llama_cpps_on_gemma_logits(gemma_rows: list[np.ndarray]) -> None:
    n_vocab = gemma_rows[0].shape[0]
    compared = deferred = 0
    for top_k, top_p, min_p, temperature, penalized in grid():
        params = SamplingParams(
            max_tokens=1,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            **(PENALTIES if penalized else NO_PENALTIES),
        )
        if not fast_draw_applies(params, n_vocab, constrained=False):
            continue
        chain = choice_chain(params, 5, penalties=n_vocab)
        draw = TokenDraw(params, 5, n_vocab)
        try:
            for row in gemma_rows:
                kept, selected = apply_to_row(chain, row)
                theirs = distribution(kept["id"], kept["p"])
                mine = distribution(*draw.distribution(row))
                assert mine[0] == theirs[0], (params, compared)
                np.testing.assert_allclose(mine[1], theirs[1], rtol=1e-5, atol=1e-7)
                token = int(kept["id"][selected])
                native.llama_sampler_accept(chain, token)  # both windows hold what the chain drew
                draw.remember(token)
                compared += 1
            deferred += draw.deferred
        finally:
            native.llama_sampler_free(chain)
            draw.close()
    assert compared >= 100 * len(gemma_rows)
    assert deferred <= compared // 100  # the numpy arithmetic settles nearly every step itself


def generate(engine: LlamaCppEngine, params: SamplingParams) -> list[int]:
    prompt = engine.tokenize(PROMPTS[0])
    return [t.token_id for t in engine.stream(0, prompt, params, threading.Event())]


def test_a_seed_repeats_a_generation(llama_engine: LlamaCppEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[TokenSampler] = []
    original = llama_cpp.make_sampler

    def observed(*args: Any) -> TokenSampler:
        made.append(original(*args))
        return made[-1]

    monkeypatch.setattr(llama_cpp, "make_sampler", observed)
    params = SamplingParams(max_tokens=32, temperature=0.8, seed=21, repeat_penalty=1.1)
    first = generate(llama_engine, params)
    assert generate(llama_engine, params) == first
    other = SamplingParams(max_tokens=32, temperature=0.8, seed=22, repeat_penalty=1.1)
    assert generate(llama_engine, other) != first
    assert all(isinstance(sampler, TokenDraw) for sampler in made) and len(made) == 3
