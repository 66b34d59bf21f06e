"""A burst of requests on the real model starts together: read in one step, first tokens out at its end.

The server tells the engine how many admitted requests are on their way (``expect_arrivals``); an idle decoder waits
a moment for them, so a burst's prompts are read in one step, and a sequence's first token goes out at the end of
the step that read its prompt (not between the prompt calls of the others, which would stall its stream right after
its first token). Greedy outputs stay those of each request alone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_e2e import make_settings

from slm_runtime.engines.base import GeneratedToken, SamplingParams, TokenSink
from slm_runtime.engines.batch_plan import MIN_CHUNK
from slm_runtime.engines.llama_cpp import LlamaCppEngine

pytestmark = pytest.mark.model

GREEDY = SamplingParams(max_tokens=6, temperature=0.0, repeat_penalty=1.0)
PROMPTS = [
    "The lighthouse keeper climbed the stairs every evening at dusk to light the lamp for the ships.",
    "Bread is made from flour, water, salt and yeast, kneaded and left to rise before it is baked.",
    "The river runs from the mountains through three valleys before it reaches the sea at the old port.",
]


class Timeline:
    """One ordered record of the engine's decode calls and the tokens its sinks received (any thread)."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.events: list[tuple[str, int]] = []
        self._lock = threading.Lock()
        self.tokens: dict[int, list[int]] = {}
        self.ended = threading.Event()
        self._open = 0
        engine.observe_steps(lambda sequences, tokens: self._add(("call", tokens - sequences)))

    def _add(self, event: tuple[str, int]) -> None:
        with self._lock:
            self.events.append(event)

    def sink(self, slot: int) -> TokenSink:
        self.tokens[slot] = []
        self._open += 1

        def receive(item: GeneratedToken | BaseException | None) -> None:
            if isinstance(item, GeneratedToken):
                self.tokens[slot].append(item.token_id)
                if len(self.tokens[slot]) == 1:
                    self._add(("first", slot))
            elif item is None:
                with self._lock:
                    self._open -= 1
                    if self._open == 0:
                        self.ended.set()

        return receive


@pytest.fixture(scope="module")
def engine(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    loaded = LlamaCppEngine.load(make_settings(gguf_path, parallel=4, context_length=1024))
    yield loaded
    loaded.close()


def alone(engine: LlamaCppEngine, prompt: list[int]) -> list[int]:
    return [token.token_id for token in engine.stream(0, prompt, GREEDY, threading.Event())]


def test_a_burst_is_read_in_one_step_and_its_first_tokens_go_out_together(engine: LlamaCppEngine) -> None:
    prompts = [engine.tokenize(text) for text in PROMPTS]
    assert len({len(prompt) for prompt in prompts}) == len(prompts)  # lengths differ: a call of its own each
    expected = [alone(engine, prompt) for prompt in prompts]
    on_the_way = [len(prompts)]
    engine.expect_arrivals(lambda: on_the_way[0])
    timeline = Timeline(engine)
    try:
        for slot, prompt in enumerate(prompts):
            on_the_way[0] -= 1  # as the server does: the lease begins, then the start hands the generation over
            engine.start(slot, prompt, GREEDY, threading.Event(), timeline.sink(slot))
            threading.Event().wait(0.005)  # the requests of a burst reach the engine a few milliseconds apart
        assert timeline.ended.wait(60)
    finally:
        engine.expect_arrivals(None)
        engine.observe_steps(None)
    assert [timeline.tokens[slot] for slot in range(len(prompts))] == expected
    prompt_calls = [i for i, (kind, value) in enumerate(timeline.events) if kind == "call" and value > 0]
    firsts = [i for i, (kind, _) in enumerate(timeline.events) if kind == "first"]
    assert len(prompt_calls) == len(prompts), timeline.events  # one call per prompt (lengths differ): each read whole
    # Every prompt was read before any sequence generated, and every first token came after the last prompt call.
    assert prompt_calls == list(range(len(prompts))), timeline.events
    assert min(firsts) > max(prompt_calls), timeline.events


def test_arrivals_that_never_come_do_not_hold_a_request(engine: LlamaCppEngine) -> None:
    prompt = engine.tokenize(PROMPTS[0])
    expected = alone(engine, prompt)
    engine.expect_arrivals(lambda: 1)  # a request that was admitted and then never starts (say, it failed)
    try:
        assert alone(engine, prompt) == expected  # the wait for it ends, and the request runs as it would alone
    finally:
        engine.expect_arrivals(None)


def test_a_burst_of_equal_length_prompts_is_read_in_one_call_and_answers_as_alone(
    engine: LlamaCppEngine, gguf_path: Path
) -> None:
    """Three prompts whose unread parts have the same length arrive together: slot 1 continues a conversation whose
    first 300+ tokens its cache holds (prompt cache), slots 2 and 3 start from nothing. They are read in one call
    (one micro-batch with each one's whole chunk, at positions 300+ and 0), and each answers exactly as on an engine
    that reads it alone without any cache."""
    history = engine.tokenize(" ".join(PROMPTS) * 6)
    assert len(history) > 256  # slot 1's KV stream then spans more cells than the others' (a wider attention)
    # Every prompt's unread part (slot 1's: the answer's token, sampled but never read, and a question).
    size = MIN_CHUNK + 1
    question = engine.tokenize(PROMPTS[0], add_special=False)[: size - 1]
    assert len(question) == size - 1
    first_turn = SamplingParams(max_tokens=1, temperature=0.0, repeat_penalty=1.0)
    answer = [t.token_id for t in engine.stream(1, history, first_turn, threading.Event())]
    assert engine.wait_settled(60)  # slot 1 keeps the history's cells
    prompts = [history + answer + question, engine.tokenize(PROMPTS[1])[:size], engine.tokenize(PROMPTS[2])[:size]]
    reference = LlamaCppEngine.load(make_settings(gguf_path, parallel=1, context_length=1024, prompt_cache=False))
    try:
        expected = [alone(reference, prompt) for prompt in prompts]
    finally:
        reference.close()
    on_the_way = [len(prompts)]
    engine.expect_arrivals(lambda: on_the_way[0])
    timeline = Timeline(engine)
    try:
        for slot, prompt in enumerate(prompts, start=1):
            on_the_way[0] -= 1
            engine.start(slot, prompt, GREEDY, threading.Event(), timeline.sink(slot))
        assert timeline.ended.wait(60)
    finally:
        engine.expect_arrivals(None)
        engine.observe_steps(None)
    assert [timeline.tokens[slot] for slot in (1, 2, 3)] == expected
    prompt_calls = [value for kind, value in timeline.events if kind == "call" and value > 0]
    # One call carried the three unread parts: 3 x size tokens of 3 sequences (slot 1 reused its history).
    assert prompt_calls == [len(prompts) * (size - 1)], timeline.events
