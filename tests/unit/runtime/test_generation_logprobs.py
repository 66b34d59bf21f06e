"""Log-probabilities through :func:`slm_runtime.generation.generate`: each chunk carries the tokens whose text it
completes, tokens that a stop sequence cuts are never reported, and nothing is reported unless asked."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Sequence

from runtime_fast import FastApp

from slm_runtime.accesslog import AccessRecord
from slm_runtime.engines.base import GeneratedToken, SamplingParams, TokenSink, deliver
from slm_runtime.engines.fake import BOS, FakeEngine, fake_logprobs
from slm_runtime.generation import GenerationDone, TextChunk, generate
from slm_runtime.options import RequestOptions
from slm_runtime.request_context import RequestContext


class ScriptedEngine(FakeEngine):
    """Delivers fixed tokens (any text, also none), each with the fake engine's log-probabilities."""

    def __init__(self, pieces: Sequence[tuple[int, str]]) -> None:
        super().__init__(1)
        self.pieces = pieces

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        tokens = [
            GeneratedToken(token, text, *fake_logprobs(token, params.logprobs or 0))
            for token, text in self.pieces[: params.max_tokens]
        ]
        threading.Thread(target=deliver, args=(iter(tokens), sink)).start()


def run(engine: FakeEngine, options: RequestOptions) -> list[TextChunk]:
    async def scenario() -> list[TextChunk]:
        async with FastApp(engine, {}) as app:
            request = RequestContext(app.service, "openai", time.perf_counter(), AccessRecord())
            events = [event async for event in generate(request, [BOS], options)]
        assert isinstance(events[-1], GenerationDone)
        return [event for event in events if isinstance(event, TextChunk)]

    return asyncio.run(scenario())


def test_every_token_is_reported_once_with_the_chunk_that_carries_its_text(fake_engine: FakeEngine) -> None:
    chunks = run(fake_engine, RequestOptions(num_predict=64, logprobs=3))
    reported = [entry for chunk in chunks for entry in chunk.logprobs]
    assert "".join(entry.token for entry in reported) == fake_engine.reply == "".join(c.text for c in chunks)
    for chunk in chunks:
        assert "".join(entry.token for entry in chunk.logprobs) == chunk.text
    first = reported[0]
    assert first.token_bytes == b"H" and math.isclose(first.logprob, -math.log(2))
    assert [top.token for top in first.top_logprobs] == ["H", "I", "J"]
    assert [top.token_bytes for top in first.top_logprobs] == [b"H", b"I", b"J"]
    assert first.top_logprobs[0].logprob == first.logprob


def test_tokens_cut_by_a_stop_sequence_are_not_reported(fake_engine: FakeEngine) -> None:
    # "Hello from the fake engine.": " f" is held back as a possible start of " fast" until "r" rules it out;
    # " the" is a stop sequence, so its four tokens are cut.
    chunks = run(fake_engine, RequestOptions(num_predict=64, logprobs=0, stop=(" fast", " the")))
    text = "".join(chunk.text for chunk in chunks)
    assert text == "Hello from"
    reported = [entry for chunk in chunks for entry in chunk.logprobs]
    assert "".join(entry.token for entry in reported) == text
    assert all(entry.top_logprobs == () for entry in reported)


def test_a_held_back_token_is_reported_with_its_text() -> None:
    engine = ScriptedEngine([(ord(c) + 3, c) for c in "ab#cd"])
    try:
        chunks = run(engine, RequestOptions(num_predict=8, logprobs=1, stop=("#!",)))
    finally:
        engine.close()
    assert [(chunk.text, [e.token for e in chunk.logprobs]) for chunk in chunks] == [
        ("a", ["a"]),
        ("b", ["b"]),
        ("#c", ["#", "c"]),
        ("d", ["d"]),
    ]


def test_a_token_whose_text_a_stop_sequence_cuts_in_part_is_not_reported() -> None:
    engine = ScriptedEngine([(10, "ab"), (11, "c#"), (12, "!d"), (13, "e")])
    try:
        chunks = run(engine, RequestOptions(num_predict=8, logprobs=0, stop=("#!",)))
    finally:
        engine.close()
    assert "".join(chunk.text for chunk in chunks) == "abc"
    assert [entry.token_bytes for chunk in chunks for entry in chunk.logprobs] == [engine.token_bytes(10)]


def test_tokens_without_text_of_their_own_go_with_the_next_text_or_the_end() -> None:
    # "é" arrives in two byte tokens, the first completing no character; the generation then ends mid-character.
    pieces = [(0xC3 + 3, ""), (0xA9 + 3, "é"), (ord("!") + 3, "!"), (0xE2 + 3, "")]
    engine = ScriptedEngine(pieces)
    try:
        chunks = run(engine, RequestOptions(num_predict=8, logprobs=0))
    finally:
        engine.close()
    assert [(chunk.text, [e.token_bytes for e in chunk.logprobs]) for chunk in chunks] == [
        ("é", [b"\xc3", b"\xa9"]),
        ("!", [b"!"]),
        ("", [b"\xe2"]),
    ]
    assert chunks[0].logprobs[0].token == "\ufffd"  # a lone byte's text: the replacement character


def test_nothing_is_reported_unless_asked(fake_engine: FakeEngine) -> None:
    chunks = run(fake_engine, RequestOptions(num_predict=64))
    assert all(chunk.logprobs == () for chunk in chunks)
    assert fake_engine.started[-1].params.logprobs is None
