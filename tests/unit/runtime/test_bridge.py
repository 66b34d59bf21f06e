"""The thread->loop bridge: tokens reach the coroutine, the lease goes back only once the engine has stopped with
the slot, the deadline stops a generation, and a start that fails frees the slot at once."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence

import pytest
from runtime_fast import wait_for

from slm_runtime.bridge import TokenBridge
from slm_runtime.engines.base import GeneratedToken, SamplingParams, TokenSink
from slm_runtime.engines.fake import BOS, FakeEngine
from slm_runtime.errors import InvalidRequestError, RequestTimeoutError
from slm_runtime.scheduler import Scheduler

PARAMS = SamplingParams(max_tokens=100)


def test_tokens_arrive_in_order_and_the_slot_comes_back_after_the_end(fake_engine: FakeEngine) -> None:
    async def scenario() -> str:
        scheduler = Scheduler(1, 0)
        lease = await scheduler.acquire()
        tokens = TokenBridge().tokens(fake_engine, lease, [BOS], PARAMS, deadline=time.perf_counter() + 5, timeout=5)
        text = "".join([token.text async for token in tokens])
        await wait_for(lambda: scheduler.running == 0, "the lease to be released")
        return text

    assert asyncio.run(scenario()) == fake_engine.reply


class HeldEngine(FakeEngine):
    """Hands a generation over and leaves its end to the test."""

    def __init__(self) -> None:
        super().__init__()
        self.handed: list[tuple[threading.Event, TokenSink]] = []

    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        self.handed.append((cancel, sink))


def test_closing_early_cancels_but_keeps_the_slot_until_the_engine_ends() -> None:
    engine = HeldEngine()

    async def scenario() -> None:
        scheduler = Scheduler(1, 0)
        lease = await scheduler.acquire()
        tokens = TokenBridge().tokens(engine, lease, [BOS], PARAMS, deadline=time.perf_counter() + 5, timeout=5)
        waiting = asyncio.ensure_future(anext(tokens))
        await wait_for(lambda: bool(engine.handed), "the generation to be handed over")
        cancel, sink = engine.handed[0]
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        await tokens.aclose()
        assert cancel.is_set()
        await asyncio.sleep(0.02)
        assert scheduler.running == 1  # the engine has not ended: the slot is still its own
        threading.Thread(target=sink, args=(None,)).start()
        await wait_for(lambda: scheduler.running == 0, "the lease to be released")

    try:
        asyncio.run(scenario())
    finally:
        engine.close()


def test_the_deadline_raises_a_timeout_and_stops_the_engine(fake_engine: FakeEngine) -> None:
    fake_engine.gate.clear()

    async def scenario() -> None:
        scheduler = Scheduler(1, 0)
        lease = await scheduler.acquire()
        deadline = time.perf_counter() + 0.05
        tokens = TokenBridge().tokens(fake_engine, lease, [BOS], PARAMS, deadline=deadline, timeout=0.05)
        with pytest.raises(RequestTimeoutError, match=r"request timeout of 0\.05s"):
            await anext(tokens)
        await wait_for(lambda: scheduler.running == 0, "the lease to be released")
        assert fake_engine.busy_slots == set()

    asyncio.run(scenario())


class RefusingEngine(FakeEngine):
    def start(
        self, slot: int, prompt: Sequence[int], params: SamplingParams, cancel: threading.Event, sink: TokenSink
    ) -> None:
        raise InvalidRequestError("refused", param="prompt")


def test_a_start_that_raises_frees_the_slot_and_reaches_the_caller() -> None:
    engine = RefusingEngine()

    async def scenario() -> None:
        scheduler = Scheduler(1, 0)
        lease = await scheduler.acquire()
        tokens = TokenBridge().tokens(engine, lease, [BOS], PARAMS, deadline=time.perf_counter() + 5, timeout=5)
        with pytest.raises(InvalidRequestError, match="refused"):
            await anext(tokens)
        await wait_for(lambda: scheduler.running == 0, "the lease to be released")

    try:
        asyncio.run(scenario())
    finally:
        engine.close()


def test_the_decoder_is_let_go_only_after_the_token_was_handled() -> None:
    """``wait_delivered`` (what the decoder calls between steps) returns after the request's coroutine has handled
    the token, not merely after the token reached the loop: the loop's per-token work never overlaps a step."""
    engine = HeldEngine()

    async def scenario() -> list[str]:
        scheduler = Scheduler(1, 0)
        lease = await scheduler.acquire()
        bridge = TokenBridge()
        mailbox = bridge.mailbox(asyncio.get_running_loop())
        tokens = bridge.tokens(engine, lease, [BOS], PARAMS, deadline=time.perf_counter() + 5, timeout=5)
        handled: list[str] = []

        async def consume() -> None:
            async for token in tokens:
                handled.append(token.text)

        consumer = asyncio.create_task(consume())
        await wait_for(lambda: bool(engine.handed), "the generation to be handed over")
        _, sink = engine.handed[0]
        seen: list[str] = []

        def decoder() -> None:
            for text in "abc":
                sink(GeneratedToken(ord(text), text))
                mailbox.wait_delivered(timeout=5)
                seen.append("".join(handled))
            sink(None)

        await asyncio.to_thread(decoder)
        await consumer
        return seen

    try:
        assert asyncio.run(scenario()) == ["a", "ab", "abc"]
    finally:
        engine.close()
