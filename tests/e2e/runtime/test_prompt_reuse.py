"""Prompt reuse (the prompt cache, --prompt-cache) on the real model: greedy output is the same with it on and off.

A new request skips re-reading the longest exact prefix any slot holds: its own slot's (a multi-turn chat) or another
slot's, copied across KV streams (a shared system prompt), idle or still generating. These tests check that the
tokens are identical to an engine without reuse, and that the prefix really was skipped (the first prompt call
evaluated only the rest).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_e2e import make_settings

from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.batch_plan import MIN_CHUNK
from slm_runtime.engines.llama_cpp import LlamaCppEngine

pytestmark = pytest.mark.model

GREEDY = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
SYSTEM = (
    "You are the archivist of the lighthouse on the northern cape. It was built in 1851, rebuilt after the storm "
    "of 1903, electrified in 1931 and automated in 1987. Answer questions about it briefly and precisely. "
) * 3


class Recorder:
    """The prompt tokens of each decode call that carries a prompt chunk, per call (the engine's step observer)."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.calls: list[tuple[int, int]] = []
        engine.observe_steps(lambda sequences, tokens: self.calls.append((sequences, tokens)))

    def first_prompt_call(self) -> int:
        return next(tokens for sequences, tokens in self.calls if tokens > sequences)


def load(gguf_path: Path, *, reuse: bool, parallel: int = 2) -> LlamaCppEngine:
    return LlamaCppEngine.load(make_settings(gguf_path, parallel=parallel, context_length=2048, prompt_cache=reuse))


@pytest.fixture(scope="module")
def plain(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    """The reference: no prompt reuse."""
    engine = load(gguf_path, reuse=False)
    yield engine
    engine.close()


def generate(engine: LlamaCppEngine, slot: int, prompt: list[int], params: SamplingParams = GREEDY) -> list[int]:
    return [token.token_id for token in engine.stream(slot, prompt, params, threading.Event())]


def conversation(
    engine: LlamaCppEngine, questions: list[str], *, settle: bool = False
) -> tuple[list[list[int]], list[int]]:
    """A chat replayed turn by turn on slot 0: each turn's prompt is the last one, its answer and a new question
    (``settle``: the next question waits until the engine is idle, as a person typing it would make it).
    Returns every answer and how many prompt tokens each turn's first prompt call evaluated."""
    recorder = Recorder(engine)
    history = engine.tokenize(SYSTEM)
    answers, evaluated = [], []
    for question in questions:
        history += engine.tokenize(question, add_special=False)
        recorder.calls.clear()
        answer = generate(engine, 0, history)
        answers.append(answer)
        evaluated.append(recorder.first_prompt_call())
        history += answer
        if settle:
            assert engine.wait_settled(60), "the engine did not settle"
    return answers, evaluated


def test_a_multi_turn_chat_answers_the_same_with_reuse_and_reads_only_the_new_part(
    gguf_path: Path, plain: LlamaCppEngine
) -> None:
    questions = [" When was it built?", " And when rebuilt?", " Who automated it?", " What storm was it?"]
    expected, full_reads = conversation(plain, questions)
    engine = load(gguf_path, reuse=True)
    try:
        answers, reads = conversation(engine, questions)
    finally:
        engine.close()
    assert answers == expected
    # Turn 1 reads everything; later turns re-read only the previous answer (its cells came from one-token calls)
    # and the new question: far fewer tokens than the whole history.
    assert reads[0] == full_reads[0]
    for turn in range(1, len(questions)):
        assert reads[turn] < full_reads[turn] / 2, (turn, reads, full_reads)
        assert reads[turn] >= MIN_CHUNK


def test_after_a_pause_a_follow_up_turn_reads_only_its_question(gguf_path: Path, plain: LlamaCppEngine) -> None:
    questions = [" When was it built?", " And when rebuilt?", " Who automated it?"]
    expected, _ = conversation(plain, questions)
    engine = load(gguf_path, reuse=True)
    try:
        answers, reads = conversation(engine, questions, settle=True)
    finally:
        engine.close()
    assert answers == expected
    # While idle, the engine re-read each answer as a chunk, so its cells became exact: the next turn reads its
    # question and the answer's last token (sampled, never evaluated), at least MIN_CHUNK tokens.
    for turn in range(1, len(questions)):
        new_part = 1 + len(plain.tokenize(questions[turn], add_special=False))
        assert reads[turn] == max(MIN_CHUNK, new_part), (turn, reads)


def test_a_shared_system_prompt_is_copied_from_another_idle_slot(gguf_path: Path, plain: LlamaCppEngine) -> None:
    first = plain.tokenize(SYSTEM + " When was it built?")
    second = plain.tokenize(SYSTEM + " Who automated it, and when?")
    expected = generate(plain, 1, second)
    engine = load(gguf_path, reuse=True)
    try:
        generate(engine, 0, first)
        recorder = Recorder(engine)
        answer = generate(engine, 1, second)
    finally:
        engine.close()
    assert answer == expected
    shared = next(i for i, (a, b) in enumerate(zip(first, second, strict=False)) if a != b)
    assert shared > len(second) / 2
    # The shared part came from slot 0 (at least MIN_CHUNK tokens are always read, see the last test).
    assert recorder.first_prompt_call() == max(len(second) - shared, MIN_CHUNK)


def test_a_prefix_is_copied_from_a_slot_that_is_still_generating(gguf_path: Path, plain: LlamaCppEngine) -> None:
    """Slot 0 generates a long answer; slot 1 arrives meanwhile with the same system prompt and copies it."""
    first = plain.tokenize(SYSTEM + " Tell the whole history of the lighthouse.")
    second = plain.tokenize(SYSTEM + " Who automated it, and when?")
    long_answer = SamplingParams(max_tokens=64, temperature=0.0, repeat_penalty=1.0)
    expected_first = generate(plain, 0, first, long_answer)
    expected_second = generate(plain, 1, second)
    engine = load(gguf_path, reuse=True)
    results: dict[str, list[int]] = {}
    try:
        recorder = Recorder(engine)
        tokens = engine.stream(0, first, long_answer, threading.Event())
        results["first"] = [next(tokens).token_id]  # slot 0 has read its prompt and is generating
        recorder.calls.clear()
        worker = threading.Thread(target=lambda: results.update(second=generate(engine, 1, second)))
        worker.start()
        results["first"] += [token.token_id for token in tokens]
        worker.join(timeout=300)
    finally:
        engine.close()
    assert results["first"] == expected_first
    assert results["second"] == expected_second
    assert recorder.first_prompt_call() <= max(len(second) - len(plain.tokenize(SYSTEM)), MIN_CHUNK)


def test_a_prompt_barely_longer_than_the_cached_one_re_reads_a_whole_chunk(
    gguf_path: Path, plain: LlamaCppEngine
) -> None:
    """Reuse leaves MIN_CHUNK tokens to read, so the new tail is never a short chunk that would round differently."""
    first = plain.tokenize(SYSTEM)
    second = first + plain.tokenize(" Why?", add_special=False)
    expected = generate(plain, 0, second)
    engine = load(gguf_path, reuse=True)
    try:
        generate(engine, 0, first)
        recorder = Recorder(engine)
        answer = generate(engine, 0, second)
    finally:
        engine.close()
    assert answer == expected
    assert recorder.first_prompt_call() == MIN_CHUNK


FRAGMENTS = [
    "<start_of_turn>user\n",
    "Tell me a story.",
    "List the numbers from 1 to 1000, one per line.",
    "<end_of_turn>\n",
    "<start_of_turn>model\n",
    "You are a helpful assistant. Answer briefly. ",
    "What is 2+2?",
    " Hello",
    " the lighthouse",
    "Once upon a time there was a small town by the sea where fishermen",
    " and",
    " why?",
]


def test_random_requests_under_load_answer_as_each_alone(gguf_path: Path, plain: LlamaCppEngine) -> None:
    """Rounds of 1-4 requests at once on 4 slots with reuse, each prompt an earlier prompt and its answer (cut at a
    random point, or whole) plus new text: prefixes of every length, in the request's own slot, in an idle one and
    in a running one. Every answer is the one the engine without reuse gives the same prompt alone."""
    rng = random.Random(20261201)
    engine = load(gguf_path, reuse=True, parallel=4)
    bos = engine.tokenize("")[:1]
    history: list[list[int]] = []
    reused = Recorder(engine)
    asked = 0

    def new_prompt() -> list[int]:
        prompt = list(rng.choice(history)) if history and rng.random() < 0.6 else list(bos)
        if len(prompt) > 1 and rng.random() < 0.5:
            prompt = prompt[: rng.randint(1, len(prompt))]
        for _ in range(rng.randint(1, 4)):
            prompt += engine.tokenize(rng.choice(FRAGMENTS), add_special=False)
        return prompt

    try:
        for _ in range(12):
            jobs = [(slot, new_prompt(), rng.randint(1, 32)) for slot in rng.sample(range(4), rng.randint(1, 4))]
            answers: dict[int, list[int]] = {}
            threads = [threading.Thread(target=run, args=(engine, *job, answers)) for job in jobs]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            for slot, prompt, count in jobs:
                alone = generate(plain, 0, prompt, SamplingParams(max_tokens=count, temperature=0.0))
                assert answers[slot] == alone, f"slot {slot}, a prompt of {len(prompt)} tokens"
                history.append(prompt + answers[slot])
                asked += len(prompt)
    finally:
        engine.close()
    read = sum(tokens for sequences, tokens in reused.calls if tokens > sequences)
    # Without reuse every prompt is read whole (read == asked): fewer means prefixes were taken from the cache.
    assert read < asked, f"{read} of {asked} prompt tokens read: no prefix reused, the cache was not exercised"


def run(engine: LlamaCppEngine, slot: int, prompt: list[int], count: int, answers: dict[int, list[int]]) -> None:
    answers[slot] = generate(engine, slot, prompt, SamplingParams(max_tokens=count, temperature=0.0))


def test_a_short_prompt_after_a_long_sequence_on_its_slot_answers_as_alone(
    gguf_path: Path, plain: LlamaCppEngine
) -> None:
    """A sequence longer than the sliding-window cells (Gemma 3: 512 + one batch) leaves its first positions only in
    the global layers' cells. A short prompt that shares a few leading tokens with it must not reuse them: the
    sliding-window layers no longer hold them (llama.cpp then reports no cell at all, -1, not position 0)."""
    long_prompt = plain.tokenize("Session 1. " + SYSTEM * 8 + " When was it built?")
    assert len(long_prompt) > 1024
    short = plain.tokenize("Session 10. You are the archivist of the lighthouse. When was it built?")
    expected = generate(plain, 0, short)
    engine = load(gguf_path, reuse=True)
    try:
        generate(engine, 0, long_prompt)
        assert generate(engine, 0, short) == expected
    finally:
        engine.close()
