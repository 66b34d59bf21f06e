"""Hand items from worker threads to the event loop with one loop wake-up per burst.

Every generated token crosses from an engine thread to the event loop. One ``call_soon_threadsafe`` per token
wakes the loop once per token; with eight sequences decoded together that is eight wake-ups per step, each of
which preempts one of llama.cpp's compute threads on a small machine. The mailbox queues items and schedules a
single drain until the loop has run it, so a step's tokens reach their requests in one wake-up: the drain hands
each item to its ``deliver`` callable on the loop (the bridge's per-generation channel, or an asyncio queue's
``put_nowait``).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["Deliver", "Mailbox"]

Deliver = Callable[[Any], object]
"""What takes one item on the loop (called by the drain, in the order the items were put)."""


class Mailbox:
    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._items: collections.deque[tuple[Deliver, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._scheduled = False
        self._delivered = threading.Event()
        self._delivered.set()

    def put(self, deliver: Deliver, item: Any) -> None:
        """Call ``deliver(item)`` on the loop (from any thread); RuntimeError once the loop is closed."""
        with self._lock:
            self._items.append((deliver, item))
            if self._scheduled:
                return
            self._scheduled = True
            self._delivered.clear()
        try:
            self.loop.call_soon_threadsafe(self._drain)
        except RuntimeError:
            with self._lock:
                self._scheduled = False
            raise

    def _drain(self) -> None:
        with self._lock:
            items, self._items = self._items, collections.deque()
            self._scheduled = False
        for deliver, item in items:
            deliver(item)
        # Runs after the consumers that these items woke (they were scheduled first): a consumer that handles an
        # item without waiting on anything else (the bridge's channel wakes its generation's task directly) has
        # streamed it out by then.
        self.loop.call_soon(self._delivered.set)

    def wait_delivered(self, timeout: float = 0.01) -> None:
        """Block (a producer thread, at most ``timeout`` s) until the loop has handled what was put so far.

        llama.cpp's decoder calls this between steps: the loop's per-token work (streaming the chunks out)
        then runs while the compute threads are idle instead of preempting one of them mid-step, which on a
        small machine stalls the other at its barrier.
        """
        self._delivered.wait(timeout)
