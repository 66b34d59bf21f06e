"""Log-probabilities from the llama.cpp engine on the real model (the ONNX engine's are in test_onnx_engine.py).

They are the model's distribution at each step: the top list is sorted and sums to at most 1, a greedy token is the
most likely one, the chosen token's value equals its entry in the top list, asking for them changes no output, and
a sequence's values do not depend on what else the batch decodes.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from runtime_e2e import make_settings

from slm_runtime.engines.base import Engine, GeneratedToken, SamplingParams
from slm_runtime.engines.llama_cpp import LlamaCppEngine

pytestmark = pytest.mark.model

PROMPT = "The lighthouse keeper opened the logbook and wrote"
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)


def run(engine: Engine, params: SamplingParams, slot: int = 0, prompt: str = PROMPT) -> list[GeneratedToken]:
    return list(engine.stream(slot, engine.tokenize(prompt), params, threading.Event()))


def assert_distribution(token: GeneratedToken, k: int) -> None:
    assert token.logprob is not None and token.logprob <= 0.0
    assert len(token.top_logprobs) == k
    values = [value for _, value in token.top_logprobs]
    assert values == sorted(values, reverse=True)
    assert sum(math.exp(value) for value in values) <= 1.0 + 1e-6
    ranked = dict(token.top_logprobs)
    if token.token_id in ranked:
        assert ranked[token.token_id] == token.logprob
    else:
        assert token.logprob <= values[-1]


def test_greedy_tokens_are_the_most_likely_and_unchanged_by_asking(llama_engine: Engine) -> None:
    plain = run(llama_engine, GREEDY)
    asked = run(llama_engine, replace(GREEDY, logprobs=5))
    assert [t.token_id for t in asked] == [t.token_id for t in plain]
    assert all(t.logprob is None and t.top_logprobs == () for t in plain)
    for token in asked:
        assert_distribution(token, 5)
        assert token.top_logprobs[0] == (token.token_id, token.logprob)
    assert any(t.logprob < -0.1 for t in asked)  # a real distribution, not certainty everywhere


def test_sampled_tokens_report_their_own_probability(llama_engine: Engine) -> None:
    params = SamplingParams(max_tokens=32, temperature=1.2, top_k=40, seed=5, repeat_penalty=1.1)
    plain = run(llama_engine, params)
    asked = run(llama_engine, replace(params, logprobs=3))
    assert [t.token_id for t in asked] == [t.token_id for t in plain]
    for token in asked:
        assert_distribution(token, 3)
    assert any(t.top_logprobs[0][0] != t.token_id for t in asked)  # some draws were not the most likely token
    only_chosen = run(llama_engine, replace(params, logprobs=0))
    assert [(t.token_id, t.logprob, t.top_logprobs) for t in only_chosen] == [
        (t.token_id, t.logprob, ()) for t in asked
    ]


def test_a_constrained_token_reports_the_model_s_unconstrained_probability(llama_engine: Engine) -> None:
    """Under a grammar the value is still the model's own (as OpenAI reports it): a forced token may be unlikely."""
    schema = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"]}
    params = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0, json_schema=schema, logprobs=2)
    tokens = run(llama_engine, params, prompt="Is the sea salty?")
    assert "".join(t.text for t in tokens).replace(" ", "").startswith('{"answer":')
    for token in tokens:
        assert_distribution(token, 2)
    assert any(t.top_logprobs[0][0] != t.token_id for t in tokens)  # the grammar overruled the model somewhere


@pytest.fixture(scope="module")
def batch_engine(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    engine = LlamaCppEngine.load(make_settings(gguf_path, parallel=3, context_length=512))
    yield engine
    engine.close()


def test_values_do_not_depend_on_the_neighbours_in_the_batch(batch_engine: LlamaCppEngine) -> None:
    params = replace(GREEDY, logprobs=4)
    prompts = [PROMPT, "Once upon a time", "def fibonacci(n):"]
    alone = [run(batch_engine, params, 0, prompt) for prompt in prompts]
    together: list[list[GeneratedToken]] = [[] for _ in prompts]

    def work(slot: int) -> None:
        together[slot] = run(batch_engine, params if slot != 1 else GREEDY, slot, prompts[slot])

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for slot in (0, 2):  # slot 1 asked for none, beside them
        assert [t.token_id for t in together[slot]] == [t.token_id for t in alone[slot]]
        for mine, solo in zip(together[slot], alone[slot], strict=True):
            assert mine.logprob == pytest.approx(solo.logprob, abs=1e-4)
            assert [t for t, _ in mine.top_logprobs] == [t for t, _ in solo.top_logprobs]
    assert all(t.logprob is None for t in together[1])


def test_token_bytes_are_the_pieces_of_the_output(llama_engine: Engine) -> None:
    tokens = run(llama_engine, replace(GREEDY, logprobs=0), prompt="Café au lait, crème brûlée")
    assert b"".join(llama_engine.token_bytes(t.token_id) for t in tokens).decode() == "".join(t.text for t in tokens)
    assert llama_engine.token_bytes(llama_engine.tokenize("<end_of_turn>", add_special=False)[0]) == b"<end_of_turn>"
