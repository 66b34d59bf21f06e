"""Admission control: a fixed number of slots, a bounded FIFO queue in front of them.

A request takes a :class:`Lease` on one slot (an index the engine uses to pick its context) and gives it back
when its generation has *really* stopped, so that an engine never runs two generations on one slot. When
every slot is busy and ``max_queue`` requests already wait, :meth:`Scheduler.acquire` raises ServerBusyError
(HTTP 503 with Ollama's message). A waiter that is cancelled (client gone, timeout) leaves the queue at once.

The server decides before it reads a request: :meth:`Scheduler.reserve` takes a :class:`Ticket` (a place among the
``slots + max_queue`` requests the server holds) or raises ServerBusyError, and the request's later ``acquire``
with that ticket is never refused. A request refused that way costs nothing past its headers (see
:mod:`slm_runtime.admission`), and one that passed never parses, renders and tokenizes only to be refused.

There are ``parallel`` slots, as many as the engine runs at once (llama.cpp's batch holds one sequence per
slot). A request gets the lowest-numbered free slot, so that the busy slots stay packed at the low numbers:
llama.cpp decodes only a run of consecutive sequence ids in one pass over the weights, and every gap between busy
slots costs another pass.
All methods run on the event loop; engine threads hand slots back through ``loop.call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import collections
import heapq
from collections.abc import Callable

from slm_runtime.errors import ServerBusyError

__all__ = ["Lease", "Scheduler", "Ticket"]


class Lease:
    """One acquired slot. ``begin()`` and ``release()`` are idempotent."""

    def __init__(self, scheduler: Scheduler, slot: int) -> None:
        self._scheduler = scheduler
        self.slot = slot
        self._released = False
        self._begun = False

    def begin(self) -> None:
        """The generation is being handed to the engine: the slot no longer counts as arriving."""
        if not self._begun and not self._released:
            self._begun = True
            self._scheduler._begun += 1

    def release(self) -> None:
        if not self._released:
            self._released = True
            if self._begun:
                self._scheduler._begun -= 1
            self._scheduler._give_back(self.slot)


class Ticket:
    """A place reserved by :meth:`Scheduler.reserve` for one request that has not reached ``acquire`` yet.

    ``acquire(ticket)`` uses it (its place was counted, so it is never refused); ``release()`` gives an unused one
    back (the request ended before it needed a slot). Both are idempotent and only the first of them counts.
    """

    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._held = True

    @property
    def held(self) -> bool:
        """Neither used by an acquire nor released yet."""
        return self._held

    def _take(self) -> bool:
        """Mark the ticket used; whether it was still held (its place is then the caller's)."""
        if not self._held:
            return False
        self._held = False
        self._scheduler._reserved -= 1
        return True

    def release(self) -> None:
        if self._take():
            self._scheduler._changed()


class Scheduler:
    def __init__(self, slots: int, max_queue: int, on_change: Callable[[int, int], None] | None = None) -> None:
        if slots < 1:
            raise ValueError("slots must be >= 1")
        if max_queue < 0:
            raise ValueError("max_queue must be >= 0")
        self.slots = slots
        self.max_queue = max_queue
        self._free: list[int] = list(range(slots))
        """A heap: the lowest free slot first."""
        self._waiters: collections.deque[asyncio.Future[int]] = collections.deque()
        self._reserved = 0
        """Tickets handed out and neither used nor released (requests on their way to ``acquire``)."""
        self._begun = 0
        """Leases whose generation was handed to the engine (:meth:`Lease.begin`) and not released."""
        self._on_change = on_change

    @property
    def running(self) -> int:
        return self.slots - len(self._free)

    @property
    def waiting(self) -> int:
        return sum(1 for w in self._waiters if not w.done())

    @property
    def reserved(self) -> int:
        """Requests holding a ticket that have not asked for their slot yet."""
        return self._reserved

    @property
    def arriving(self) -> int:
        """Requests the engine will get soon: holding a ticket, waiting for a slot, or holding one not begun.

        Safe to read from another thread (the engine's decoder): it reads only lengths and counters, so it may be a
        step out of date (a waiter that just gave up still counts), never an error."""
        return self._reserved + len(self._waiters) + self.slots - len(self._free) - self._begun

    def has_room(self) -> bool:
        """Whether one more request fits: running, waiting and reserved together stay within slots + max_queue."""
        return self.running + self.waiting + self._reserved < self.slots + self.max_queue

    def reserve(self) -> Ticket:
        """A place for a request about to be read; ServerBusyError when the server already holds all it may."""
        if not self.has_room():
            raise ServerBusyError()
        self._reserved += 1
        return Ticket(self)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change(self.running, self.waiting)

    async def acquire(self, ticket: Ticket | None = None) -> Lease:
        """A lease on a free slot, waiting in FIFO order; ServerBusyError when the queue is full, unless ``ticket``
        (still held) reserved this request's place."""
        if not (ticket is not None and ticket._take()) and not self.has_room():
            raise ServerBusyError()
        if self._free and not self._waiters:
            lease = Lease(self, heapq.heappop(self._free))
            self._changed()
            return lease
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._changed()
        try:
            slot = await future
        except BaseException:
            if future.done() and not future.cancelled():
                # The slot was handed to us just as we were cancelled: pass it on.
                self._give_back(future.result())
            else:
                future.cancel()
                self._prune()
                self._changed()
            raise
        return Lease(self, slot)

    def _prune(self) -> None:
        while self._waiters and self._waiters[0].done():
            self._waiters.popleft()
        # Cancelled waiters in the middle are skipped when reached; drop them eagerly too.
        self._waiters = collections.deque(w for w in self._waiters if not w.done())

    def _give_back(self, slot: int) -> None:
        self._prune()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                self._changed()
                return
        heapq.heappush(self._free, slot)
        self._changed()
