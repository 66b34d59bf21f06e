"""Scheduler admission: slots, FIFO queue, 503 when full, cancelled waiters leave the queue."""

from __future__ import annotations

import asyncio

import pytest

from slm_runtime.errors import OLLAMA_SERVER_BUSY, ServerBusyError
from slm_runtime.scheduler import Scheduler


def test_slots_then_queue_then_busy() -> None:
    async def scenario() -> None:
        changes: list[tuple[int, int]] = []
        scheduler = Scheduler(slots=2, max_queue=1, on_change=lambda r, w: changes.append((r, w)))
        first = await scheduler.acquire()
        second = await scheduler.acquire()
        assert {first.slot, second.slot} == {0, 1}
        assert (scheduler.running, scheduler.waiting) == (2, 0)
        waiter = asyncio.create_task(scheduler.acquire())
        await asyncio.sleep(0)
        assert scheduler.waiting == 1
        with pytest.raises(ServerBusyError) as busy:
            await scheduler.acquire()
        assert busy.value.status == 503
        assert busy.value.message == OLLAMA_SERVER_BUSY
        first.release()
        third = await waiter
        assert third.slot == first.slot
        assert (scheduler.running, scheduler.waiting) == (2, 0)
        first.release()  # idempotent: must not free a slot twice
        assert scheduler.running == 2
        second.release()
        third.release()
        assert (scheduler.running, scheduler.waiting) == (0, 0)
        assert changes[-1] == (0, 0)

    asyncio.run(scenario())


def test_waiters_are_served_in_arrival_order() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=1, max_queue=3)
        holder = await scheduler.acquire()
        order: list[int] = []

        async def wait(index: int) -> None:
            lease = await scheduler.acquire()
            order.append(index)
            await asyncio.sleep(0)
            lease.release()

        tasks = [asyncio.create_task(wait(i)) for i in range(3)]
        await asyncio.sleep(0)
        holder.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2]

    asyncio.run(scenario())


def test_cancelled_waiter_leaves_the_queue() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=1, max_queue=1)
        holder = await scheduler.acquire()
        waiter = asyncio.create_task(scheduler.acquire())
        await asyncio.sleep(0)
        assert scheduler.waiting == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert scheduler.waiting == 0
        # The queue has room again, and the slot goes to the next live waiter.
        next_waiter = asyncio.create_task(scheduler.acquire())
        await asyncio.sleep(0)
        holder.release()
        lease = await asyncio.wait_for(next_waiter, 1)
        assert lease.slot == 0
        lease.release()
        assert scheduler.running == 0

    asyncio.run(scenario())


def test_zero_queue_rejects_at_once() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=1, max_queue=0)
        lease = await scheduler.acquire()
        with pytest.raises(ServerBusyError):
            await scheduler.acquire()
        lease.release()
        (await scheduler.acquire()).release()

    asyncio.run(scenario())


def test_the_lowest_free_slot_is_handed_out_first() -> None:
    """Busy slots stay packed at the low numbers (llama.cpp decodes consecutive sequence ids in one pass)."""

    async def scenario() -> None:
        scheduler = Scheduler(slots=4, max_queue=0)
        leases = [await scheduler.acquire() for _ in range(4)]
        assert [lease.slot for lease in leases] == [0, 1, 2, 3]
        leases[2].release()
        leases[0].release()
        assert (await scheduler.acquire()).slot == 0
        assert (await scheduler.acquire()).slot == 2

    asyncio.run(scenario())


def test_tickets_count_as_places_and_their_acquire_is_never_refused() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=1, max_queue=1)
        running = await scheduler.acquire()
        ticket = scheduler.reserve()  # the queue's one place, taken before the request is read
        assert (scheduler.waiting, scheduler.reserved) == (0, 1)
        with pytest.raises(ServerBusyError):
            scheduler.reserve()
        with pytest.raises(ServerBusyError):
            await scheduler.acquire()  # without a ticket: the place is taken
        waiter = asyncio.create_task(scheduler.acquire(ticket))
        await asyncio.sleep(0)
        assert (scheduler.waiting, scheduler.reserved) == (1, 0)
        running.release()
        (await waiter).release()
        assert scheduler.running == 0

    asyncio.run(scenario())


def test_a_released_ticket_gives_its_place_back_once() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=1, max_queue=0)
        ticket = scheduler.reserve()
        with pytest.raises(ServerBusyError):
            scheduler.reserve()
        ticket.release()
        ticket.release()  # idempotent: must not free a place twice
        assert scheduler.reserved == 0
        other = scheduler.reserve()
        lease = await scheduler.acquire(other)
        other.release()  # used: releasing it afterwards changes nothing
        assert (scheduler.running, scheduler.reserved) == (1, 0)
        with pytest.raises(ServerBusyError):
            await scheduler.acquire(ticket)  # a released ticket holds no place
        lease.release()

    asyncio.run(scenario())


def test_arriving_counts_requests_on_their_way_to_the_engine() -> None:
    async def scenario() -> None:
        scheduler = Scheduler(slots=2, max_queue=2)
        assert scheduler.arriving == 0
        ticket = scheduler.reserve()  # a request being read
        assert scheduler.arriving == 1
        first = await scheduler.acquire(ticket)  # it has a slot, its generation not handed over yet
        assert scheduler.arriving == 1
        first.begin()
        first.begin()  # idempotent
        assert scheduler.arriving == 0
        second = await scheduler.acquire()
        assert scheduler.arriving == 1
        waiter = asyncio.create_task(scheduler.acquire())
        await asyncio.sleep(0)
        assert scheduler.arriving == 2  # the one not begun and the one waiting for a slot
        second.release()  # released before it began: the slot goes to the waiter, which has not begun either
        third = await waiter
        assert scheduler.arriving == 1
        third.begin()
        first.release()
        third.release()
        third.begin()  # a released lease cannot begin
        assert (scheduler.arriving, scheduler.running) == (0, 0)

    asyncio.run(scenario())
