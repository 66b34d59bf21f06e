"""The thread->loop bridge: a generation's tokens, delivered on the engine's thread, reach the request's coroutine.

:meth:`TokenBridge.tokens` starts the generation with a sink that posts into an asyncio queue through the
:class:`~slm_runtime.mailbox.Mailbox` (one loop wake-up per burst of tokens), and yields the tokens until the
engine's end, the request deadline, or the consumer closing it (which sets the engine's ``cancel``). The slot's
lease is handed back only at the engine's end, once the engine has really stopped with that slot.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Sequence
from contextlib import suppress

from slm_runtime.engines.base import Engine, GeneratedToken, SamplingParams
from slm_runtime.errors import RequestTimeoutError
from slm_runtime.mailbox import Mailbox
from slm_runtime.scheduler import Lease

__all__ = ["TokenBridge"]


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
        queue: asyncio.Queue[GeneratedToken | BaseException | None] = asyncio.Queue()
        cancel = threading.Event()
        mailbox = self.mailbox(loop)

        def release() -> None:
            with suppress(RuntimeError):  # the loop is closed: nobody waits for the slot any more
                loop.call_soon_threadsafe(lease.release)

        def sink(item: GeneratedToken | BaseException | None) -> None:
            try:
                mailbox.put(queue, item)
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

        try:
            await asyncio.to_thread(start)
        except asyncio.CancelledError:
            cancel.set()  # the start may still go ahead on its thread; its end hands the slot back
            raise
        try:
            while True:
                try:
                    # Take what is already there without a timer task; wait (bounded) only when empty.
                    item = (
                        queue.get_nowait()
                        if not queue.empty()
                        else await asyncio.wait_for(queue.get(), max(0.0, deadline - time.perf_counter()))
                    )
                except TimeoutError as exc:
                    raise RequestTimeoutError(f"generation stopped after the request timeout of {timeout:g}s") from exc
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            cancel.set()
