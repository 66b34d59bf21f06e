"""Continuous batching on the real model: concurrent greedy generations equal solo runs, token for token.

The llama.cpp engine decodes all running sequences in one batch per step. Whatever else runs beside it, a greedy
request must produce exactly what it produces alone (short prompts and prompts longer than one batch chunk), a
cancelled sequence must not disturb the others, and the batch metrics must show that sequences really were
decoded together.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, make_settings

from slm_runtime.engines import batch_plan, llama_batch, load_engine
from slm_runtime.engines.base import SamplingParams
from slm_runtime.engines.batch_plan import MIN_CHUNK, BatchEntry
from slm_runtime.engines.llama_cpp import LlamaCppEngine

pytestmark = pytest.mark.model

PARALLEL = 8
BATCH = 128
GREEDY = SamplingParams(max_tokens=24, temperature=0.0, repeat_penalty=1.0)
HISTORY = "The lighthouse on the northern cape was built in 1851 and rebuilt after the storm of 1903. "


@pytest.fixture(scope="module")
def batch_engine(gguf_path: Path) -> Iterator[LlamaCppEngine]:
    settings = make_settings(gguf_path, parallel=PARALLEL, context_length=1024, batch_size=BATCH)
    engine = LlamaCppEngine.load(settings)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def inputs(batch_engine: LlamaCppEngine) -> list[list[int]]:
    """Four short prompts and four longer than two batch chunks (so their evaluation spans several steps)."""
    texts = [
        f"Keeper {i}: " + (HISTORY * 12 if i % 2 else "") + f"Write a story about keeper number {i}."
        for i in range(PARALLEL)
    ]
    tokens = [batch_engine.tokenize(text) for text in texts]
    assert max(len(t) for t in tokens) > 2 * BATCH
    return tokens


@pytest.fixture(scope="module")
def alone(batch_engine: LlamaCppEngine, inputs: list[list[int]]) -> list[list[int]]:
    """Each prompt's greedy tokens when it runs alone (always on slot 0)."""
    return [generate(batch_engine, 0, prompt) for prompt in inputs]


def generate(engine: LlamaCppEngine, slot: int, prompt: list[int], cancel: threading.Event | None = None) -> list[int]:
    return [token.token_id for token in engine.stream(slot, prompt, GREEDY, cancel or threading.Event())]


def run_together(jobs: list[tuple[int, list[int], threading.Event | None]], engine: LlamaCppEngine) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in jobs]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        slot, prompt, cancel = jobs[index]
        try:
            results[index] = generate(engine, slot, prompt, cancel)
        except BaseException as exc:  # surfaced below, so a failing thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    return results


@pytest.fixture
def fillers(monkeypatch: pytest.MonkeyPatch) -> list[BatchEntry]:
    """The filler entries the decoder's plans contain (an observation: plans are made and run unchanged)."""
    seen: list[BatchEntry] = []
    plan = batch_plan.plan_step

    def observed(*args: object, **kwargs: object) -> list[list[BatchEntry]]:
        calls = plan(*args, **kwargs)  # type: ignore[arg-type]
        seen.extend(entry for call in calls for entry in call if entry.filler)
        return calls

    monkeypatch.setattr(llama_batch, "plan_step", observed)
    return seen


def test_eight_concurrent_greedy_generations_equal_their_solo_runs(
    batch_engine: LlamaCppEngine, inputs: list[list[int]], alone: list[list[int]]
) -> None:
    steps: list[tuple[int, int]] = []
    batch_engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
    try:
        together = run_together([(slot, prompt, None) for slot, prompt in enumerate(inputs)], batch_engine)
    finally:
        batch_engine.observe_steps(None)
    assert all(len(tokens) == GREEDY.max_tokens for tokens in alone)
    for slot, (solo, batched) in enumerate(zip(alone, together, strict=True)):
        assert batched == solo, f"sequence {slot} differs under 8-way concurrency"
    # They really were decoded together: steps carried several sequences, never more than the slots.
    assert max(sequences for sequences, _ in steps) >= 4
    assert max(sequences for sequences, _ in steps) <= PARALLEL
    # Prompts were fed in chunks of at most the batch size.
    assert max(tokens for _, tokens in steps) <= BATCH


def test_eight_generating_sequences_in_one_step_keep_their_solo_log_probabilities(
    batch_engine: LlamaCppEngine,
) -> None:
    """Steps of eight generating rows give each sequence the log-probabilities it has alone, bit for bit.

    llama.cpp's CPU backend switches K-quant weights (this model's attention output and FFN down projections) to
    a tiled kernel from 8 rows per call on, which rounds differently from the one-row kernel: the batch-invariant
    mode keeps one kernel at every row count. Compared on log-probabilities, which show a difference that greedy
    tokens may hide."""
    params = SamplingParams(max_tokens=16, temperature=0.0, repeat_penalty=1.0, logprobs=1)
    prompts = [batch_engine.tokenize(f"Keeper {i} of the lighthouse writes in the log:") for i in range(PARALLEL)]

    def scored(slot: int, prompt: list[int]) -> list[tuple[int, float | None]]:
        return [(t.token_id, t.logprob) for t in batch_engine.stream(slot, prompt, params, threading.Event())]

    solo = [scored(0, prompt) for prompt in prompts]
    steps: list[tuple[int, int]] = []
    together: dict[int, list[tuple[int, float | None]]] = {}
    batch_engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
    try:
        threads = [
            threading.Thread(target=lambda slot=slot: together.__setitem__(slot, scored(slot, prompts[slot])))
            for slot in range(PARALLEL)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        batch_engine.observe_steps(None)
    assert (PARALLEL, PARALLEL) in steps, f"no step generated for all {PARALLEL} sequences at once: {steps}"
    for slot in range(PARALLEL):
        assert together[slot] == solo[slot], f"sequence {slot} differs when generating beside {PARALLEL - 1} others"


def test_a_prompt_read_between_generating_slots_is_unchanged_by_fillers(
    batch_engine: LlamaCppEngine, inputs: list[list[int]], alone: list[list[int]], fillers: list[BatchEntry]
) -> None:
    """Slots 0 and 2 generate while slot 1 reads a long prompt over several steps: each generating step carries a
    filler in slot 1 at the end of what it has read so far, and all three answer exactly as alone."""
    started = threading.Barrier(3)
    results: dict[int, list[int]] = {}

    def neighbour(slot: int) -> None:
        tokens = []
        for token in batch_engine.stream(slot, inputs[slot], GREEDY, threading.Event()):
            tokens.append(token.token_id)
            if len(tokens) == 1:
                started.wait(timeout=60)
        results[slot] = tokens

    threads = [threading.Thread(target=neighbour, args=(slot,)) for slot in (0, 2)]
    for thread in threads:
        thread.start()
    started.wait(timeout=60)  # both neighbours are generating
    assert len(inputs[1]) > 2 * BATCH
    results[1] = generate(batch_engine, 1, inputs[1])
    for thread in threads:
        thread.join(timeout=300)
    assert results == {0: alone[0], 1: alone[1], 2: alone[2]}
    assert any(entry.seq_id == 1 and entry.position >= BATCH for entry in fillers)


def test_cancelling_one_sequence_leaves_the_others_untouched(
    batch_engine: LlamaCppEngine, inputs: list[list[int]], alone: list[list[int]], fillers: list[BatchEntry]
) -> None:
    cancel = threading.Event()
    received: list[int] = []

    def cancelled_job() -> None:
        for token in batch_engine.stream(1, inputs[1], GREEDY, cancel):
            received.append(token.token_id)
            if len(received) == 3:
                cancel.set()

    stopper = threading.Thread(target=cancelled_job)
    stopper.start()
    others = run_together([(slot, inputs[slot], None) for slot in (0, 2, 3)], batch_engine)
    stopper.join(timeout=300)
    assert others == [alone[0], alone[2], alone[3]]
    assert 3 <= len(received) < GREEDY.max_tokens
    assert received == alone[1][: len(received)]
    # Once slot 1 was free, slots 0 and 2 went on with a filler between them, after the cells slot 1 kept.
    assert any(entry.seq_id == 1 and entry.position >= len(inputs[1]) for entry in fillers)
    # The same slot serves the same prompt again (reusing the prompt cells it kept), unchanged.
    assert generate(batch_engine, 1, inputs[1]) == alone[1]


def test_a_reader_that_stops_early_frees_its_slot_at_once(
    batch_engine: LlamaCppEngine, inputs: list[list[int]], alone: list[list[int]]
) -> None:
    prompt = inputs[0]
    stream = batch_engine.stream(2, prompt, GREEDY, threading.Event())
    first = next(stream)
    stream.close()  # returns only once the decoder has dropped the sequence
    assert first.token_id == alone[0][0]
    assert generate(batch_engine, 2, prompt) == alone[0]


def test_a_prompt_longer_than_a_sequence_context_is_refused(batch_engine: LlamaCppEngine) -> None:
    from slm_runtime.errors import ContextLengthExceededError

    too_long = batch_engine.tokenize(HISTORY * 48)
    assert len(too_long) > batch_engine.info.context_length
    with pytest.raises(ContextLengthExceededError, match="parallel sequences"):
        list(batch_engine.stream(0, too_long, GREEDY, threading.Event()))


@pytest.fixture(scope="module")
def batching_server(gguf_path: Path) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(gguf_path, parallel=4, max_queue=8, context_length=512), load_engine)
    server.start()
    yield server
    server.stop()


def test_concurrent_streaming_clients_get_their_solo_answers_and_metrics_show_batches(
    batching_server: LiveServer,
) -> None:
    questions = ["The ocean is", "My favourite food is", "In the morning I", "The capital of France is"]

    async def complete(client: openai.AsyncOpenAI, prompt: str) -> str:
        stream = await client.completions.create(
            model=MODEL_NAME, prompt=prompt, max_tokens=24, temperature=0, stream=True
        )
        return "".join([chunk.choices[0].text async for chunk in stream if chunk.choices])

    async def scenario() -> tuple[list[str], list[str]]:
        client = openai.AsyncOpenAI(base_url=batching_server.url + "/v1", api_key=API_KEY, max_retries=0)
        try:
            alone = [await complete(client, q) for q in questions]
            together = list(await asyncio.gather(*(complete(client, q) for q in questions)))
            return alone, together
        finally:
            await client.close()

    alone, together = asyncio.run(scenario())
    assert together == alone
    assert all(alone)

    import httpx

    text = httpx.get(batching_server.url + "/metrics", timeout=10).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    buckets = {s.labels["le"]: s.value for s in families["slm_batch_sequences"].samples if s.name.endswith("_bucket")}
    # Some decode steps carried more than one sequence (cumulative buckets: +Inf counts more than le=1).
    assert buckets["+Inf"] > buckets["1.0"]
    assert buckets["4.0"] == buckets["+Inf"]


def test_the_prompt_cache_skips_the_prefix_a_slot_already_holds(gguf_path: Path) -> None:
    engine = LlamaCppEngine.load(make_settings(gguf_path, parallel=1, context_length=1024, prompt_cache=True))
    steps: list[tuple[int, int]] = []
    engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
    try:
        first_turn = engine.tokenize(HISTORY * 4 + "Who built the lighthouse?")
        answer = generate(engine, 0, first_turn)
        second_turn = first_turn + answer + engine.tokenize(" And when was it rebuilt?", add_special=False)
        steps.clear()
        generate(engine, 0, second_turn)
        prompt_tokens = steps[0][1]
    finally:
        engine.close()
    # Only the part after what the slot already held (first turn + its answer) was evaluated again.
    assert prompt_tokens <= len(second_turn) - len(first_turn)
    assert prompt_tokens >= 1


def test_fillers_leave_the_prefix_an_idle_slot_holds_intact(gguf_path: Path, fillers: list[BatchEntry]) -> None:
    """Slot 1 keeps a conversation (prompt cache) while slots 0 and 2 generate around it with fillers in slot 1;
    its second turn then reuses the prefix and answers exactly as on an engine where nothing ran beside it."""
    settings = make_settings(gguf_path, parallel=3, context_length=1024, prompt_cache=True)

    def conversation(neighbours: bool) -> tuple[list[int], int]:
        engine = LlamaCppEngine.load(settings)
        steps: list[tuple[int, int]] = []
        try:
            first_turn = engine.tokenize(HISTORY * 2 + "Who built the lighthouse?")
            answer = generate(engine, 1, first_turn)
            if neighbours:
                others = [engine.tokenize(f"Keeper {i}: write a story about the sea.") for i in (0, 2)]
                run_together([(0, others[0], None), (2, others[1], None)], engine)
            question = engine.tokenize(" When was it rebuilt?", add_special=False)
            second_turn = first_turn + answer + question
            assert engine.wait_settled(60)  # idle: the kept answers were re-read as chunks (exact cells)
            engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
            return generate(engine, 1, second_turn), steps[0][1], len(question)
        finally:
            engine.close()

    quiet, _, _ = conversation(neighbours=False)
    assert not fillers
    busy, evaluated, question = conversation(neighbours=True)
    assert any(entry.seq_id == 1 and entry.position > 0 for entry in fillers)
    assert busy == quiet
    # Only the new question and the answer's last token (sampled, never evaluated), at least MIN_CHUNK tokens: the
    # first turn and its answer stayed in slot 1.
    assert evaluated == max(MIN_CHUNK, question + 1)


def test_the_greedy_fast_path_picks_what_llama_cpp_s_sampler_chain_picks(
    batch_engine: LlamaCppEngine, inputs: list[list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the real model, with the repetition penalty in play: the same tokens with and without the fast path."""
    from slm_runtime.engines import llama_cpp
    from slm_runtime.engines.greedy import fast_greedy_applies

    penalized = SamplingParams(max_tokens=32, temperature=0.0, repeat_penalty=1.3, repeat_last_n=16)
    assert fast_greedy_applies(penalized, constrained=False)

    def run() -> list[list[int]]:
        return [
            [t.token_id for t in batch_engine.stream(0, prompt, penalized, threading.Event())] for prompt in inputs[:3]
        ]

    fast = run()
    monkeypatch.setattr(llama_cpp, "fast_greedy_applies", lambda params, constrained: False)
    chain = run()
    assert fast == chain
    assert all(len(tokens) == penalized.max_tokens for tokens in fast)
    # The penalty really steers: without it the first prompt continues differently.
    plain = [t.token_id for t in batch_engine.stream(0, inputs[0], GREEDY, threading.Event())]
    assert plain != fast[0][: len(plain)]
