"""The fake engine keeps the Engine protocol's promises, and ``Engine.stream`` (built on ``start``) keeps its own:
tokens then exactly one end, the slot free once the end arrives, cancellation, errors delivered in order."""

from __future__ import annotations

import threading
import time

import pytest

from slm_runtime.engines.base import GeneratedToken, SamplingParams
from slm_runtime.engines.fake import BOS, FakeEngine, FakeEngineError

PARAMS = SamplingParams(max_tokens=100)


def test_tokens_are_bytes_and_round_trip(fake_engine: FakeEngine) -> None:
    tokens = fake_engine.tokenize("héllo")
    assert tokens[0] == BOS
    assert len(tokens) == 1 + len("héllo".encode())
    assert fake_engine.tokenize("hi", add_special=False) == [ord("h") + 3, ord("i") + 3]
    assert fake_engine.detokenize(tokens) == "héllo"


def test_a_generation_is_the_reply_one_character_per_token(fake_engine: FakeEngine) -> None:
    out = list(fake_engine.stream(0, [BOS, 72], PARAMS, threading.Event()))
    assert "".join(t.text for t in out) == fake_engine.reply
    assert fake_engine.detokenize([t.token_id for t in out]) == fake_engine.reply
    assert fake_engine.started[0].prompt == (BOS, 72)
    assert fake_engine.busy_slots == set()


def test_max_tokens_stops_early(fake_engine: FakeEngine) -> None:
    out = list(fake_engine.stream(1, [BOS], SamplingParams(max_tokens=4), threading.Event()))
    assert "".join(t.text for t in out) == fake_engine.reply[:4]


def test_the_sink_gets_tokens_then_one_end_after_the_slot_is_free(fake_engine: FakeEngine) -> None:
    items: list[GeneratedToken | BaseException | None] = []
    busy_at_end: list[set[int]] = []
    ended = threading.Event()

    def sink(item: GeneratedToken | BaseException | None) -> None:
        items.append(item)
        if item is None:
            busy_at_end.append(fake_engine.busy_slots)
            ended.set()

    fake_engine.start(0, [BOS], SamplingParams(max_tokens=3), threading.Event(), sink)
    assert ended.wait(5)
    assert [type(i) for i in items] == [GeneratedToken] * 3 + [type(None)]
    assert busy_at_end == [set()]


def test_a_busy_slot_refuses_a_second_generation(fake_engine: FakeEngine) -> None:
    fake_engine.gate.clear()
    cancel = threading.Event()
    fake_engine.start(0, [BOS], PARAMS, cancel, lambda _: None)
    try:
        assert fake_engine.busy_slots == {0}
        with pytest.raises(RuntimeError, match="slot 0 is already generating"):
            fake_engine.start(0, [BOS], PARAMS, threading.Event(), lambda _: None)
    finally:
        cancel.set()
    deadline = time.monotonic() + 5
    while fake_engine.busy_slots and time.monotonic() < deadline:
        time.sleep(0.005)
    assert fake_engine.busy_slots == set()  # cancelled while held at the gate: the slot is free again


def test_closing_a_stream_early_cancels_it_and_waits_for_the_slot(fake_engine: FakeEngine) -> None:
    fake_engine.token_delay = 0.01
    cancel = threading.Event()
    stream = fake_engine.stream(0, [BOS], PARAMS, cancel)
    first = next(stream)
    stream.close()
    assert first.text == fake_engine.reply[0]
    assert cancel.is_set()
    assert fake_engine.busy_slots == set()


def test_a_failure_arrives_after_the_tokens_before_it_and_frees_the_slot() -> None:
    engine = FakeEngine(1, fail_after=2)
    try:
        stream = engine.stream(0, [BOS], PARAMS, threading.Event())
        received = [next(stream).text, next(stream).text]
        with pytest.raises(FakeEngineError, match="after 2 tokens"):
            next(stream)
        assert received == list(engine.reply[:2])
        assert engine.busy_slots == set()
    finally:
        engine.close()


def test_step_observer_and_after_steps_see_every_step(fake_engine: FakeEngine) -> None:
    steps: list[tuple[int, int]] = []
    between: list[int] = []
    fake_engine.observe_steps(lambda sequences, tokens: steps.append((sequences, tokens)))
    fake_engine.after_steps(lambda: between.append(len(steps)))
    list(fake_engine.stream(0, [BOS, 5, 6], SamplingParams(max_tokens=2), threading.Event()))
    assert steps == [(1, 3), (1, 1), (1, 1)]
    assert between == [1, 2, 3]


def test_embeddings_count_bytes_by_value(fake_engine: FakeEngine) -> None:
    result = fake_engine.embed(["ab", "a"])
    assert result.vectors[1] == [0.0, 1.0, 0, 0, 0, 0, 0, 0]  # "a" is 97, 97 % 8 == 1
    assert result.vectors[0][1:3] == [1.0, 1.0]
    assert result.token_counts == [3, 2]


def test_a_non_ascii_reply_is_refused() -> None:
    with pytest.raises(ValueError, match="ASCII"):
        FakeEngine(reply="é")


def test_log_probabilities_follow_the_documented_distribution(fake_engine: FakeEngine) -> None:
    import math

    out = list(fake_engine.stream(0, [BOS], SamplingParams(max_tokens=3, logprobs=4), threading.Event()))
    for token in out:
        assert token.logprob == -math.log(2)
        assert token.top_logprobs[0] == (token.token_id, token.logprob)
        assert [t for t, _ in token.top_logprobs] == [token.token_id + i for i in range(4)]
        assert sum(math.exp(v) for _, v in token.top_logprobs) == pytest.approx(1 - 2**-4)
    assert [fake_engine.token_bytes(t.token_id) for t in out] == [b"H", b"e", b"l"]
    assert fake_engine.token_bytes(BOS) == b""
    plain = list(fake_engine.stream(0, [BOS], SamplingParams(max_tokens=3), threading.Event()))
    assert all(t.logprob is None and t.top_logprobs == () for t in plain)
