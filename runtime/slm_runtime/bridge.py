"""The thread->loop bridge: a generation's tokens, delivered on the engine's thread, reach the request's coroutine.

:meth:`TokenBridge.tokens` starts the generation with a sink that posts into the generation's channel through the
:class:`~slm_runtime.mailbox.Mailbox` (one loop wake-up per burst of tokens), and yields the tokens until the
engine's end, the request deadline, or the consumer closing it (which sets the engine's ``cancel``). The slot's
lease is handed back only at the engine's end, once the engine has really stopped with that slot.

A token costs the loop one wake-up and one step of the request's task: the mailbox's drain puts it in the channel,
which wakes the waiting task directly (no queue getter, no timer per token: the deadline is one timer per
generation), and the task streams it out before the drain's ``wait_delivered`` signal lets the decoder go on.
"""

from __future__ import annotations

import asyncio
import collections
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress

from slm_runtime.engines.base import Engine, GeneratedToken, SamplingParams
from slm_runtime.errors import RequestTimeoutError
from slm_runtime.mailbox import Mailbox
from slm_runtime.scheduler import Lease

__all__ = ["TokenBridge"]

_Item = GeneratedToken | BaseException | None


class _Channel:
    """One generation's items on the loop, and the waiter of the task that reads them (loop-only)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._items: collections.deque[_Item] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._expired = False

    def push(self, item: _Item) -> None:
        self._items.append(item)
        self._wake()

    def expire(self) -> None:
        """The deadline passed: a read that finds nothing raises TimeoutError."""
        self._expired = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self) -> _Item:
        while not self._items:
            if self._expired:
                raise TimeoutError
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.popleft()


class TokenBridge:
    """Runs generations for one event loop's requests (a new loop, as in tests, gets a new mailbox)."""

    def __init__(self) -> None:
        self._mailbox: Mailbox | None = None

    def mailbox(self, loop: asyncio.AbstractEventLoop) -> Mailbox:
        if self._mailbox is None or self._mailbox.loop is not loop:
            self._mailbox = Mailbox(loop)
        return self._mailbox

    async def tokens(
        self,
        engine: Engine,
        lease: Lease,
        prompt: Sequence[int],
        params: SamplingParams,
        *,
        deadline: float,
        timeout: float,
    ) -> AsyncGenerator[GeneratedToken, None]:
        """The generation's tokens; RequestTimeoutError at ``deadline`` (a perf_counter time, ``timeout`` s after
        the request arrived). The lease is released when the engine has stopped, whatever happens here."""
        loop = asyncio.get_running_loop()
        channel = _Channel(loop)
        cancel = threading.Event()
        mailbox = self.mailbox(loop)

        def release() -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits for the slot any more
                loop.call_soon_threadsafe(lease.release)

        def sink(item: _Item) -> None:
            try:
                mailbox.put(channel.push, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancel.set()
            if item is None:
                release()

        def start() -> None:
            try:
                engine.start(lease.slot, prompt, params, cancel, sink)
            except BaseException:  # nothing was handed over: the slot is free at once
                release()
                raise

        lease.begin()
        if params.json_schema is None:
            # Without a JSON schema a start only hands the generation over (the costly part of a start is
            # compiling a schema's grammar): a thread hop would cost more than it, before the first token.
            start()
        else:
            try:
                await asyncio.to_thread(start)
            except asyncio.CancelledError:
                cancel.set()  # the start may still go ahead on its thread; its end hands the slot back
                raise
        timer = loop.call_at(loop.time() + max(0.0, deadline - time.perf_counter()), channel.expire)
        try:
            while True:
                try:
                    item = await channel.get()
                except TimeoutError as exc:
                    raise RequestTimeoutError(f"generation stopped after the request timeout of {timeout:g}s") from exc
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            timer.cancel()
            cancel.set()
