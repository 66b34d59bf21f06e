"""The mailbox: items from threads reach their asyncio queues in order, a burst costs one loop wake-up."""

from __future__ import annotations

import asyncio
import threading

import pytest

from slm_runtime.mailbox import Mailbox


def test_items_from_threads_arrive_in_order_per_queue() -> None:
    async def scenario() -> list[list[int]]:
        mailbox = Mailbox(asyncio.get_running_loop())
        queues: list[asyncio.Queue[int]] = [asyncio.Queue() for _ in range(4)]

        def produce(index: int) -> None:
            for value in range(200):
                mailbox.put(queues[index].put_nowait, value)

        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        received = [[await asyncio.wait_for(q.get(), 5) for _ in range(200)] for q in queues]
        for thread in threads:
            thread.join()
        return received

    assert asyncio.run(scenario()) == [list(range(200))] * 4


def test_a_burst_is_delivered_by_one_drain() -> None:
    loop = asyncio.new_event_loop()
    try:
        mailbox = Mailbox(loop)
        drains = 0
        original = mailbox._drain

        def counted() -> None:
            nonlocal drains
            drains += 1
            original()

        mailbox._drain = counted  # type: ignore[method-assign]
        queue: asyncio.Queue[int] = asyncio.Queue()
        for value in range(8):  # the loop is not running: all eight wait for one scheduled drain
            mailbox.put(queue.put_nowait, value)
        loop.run_until_complete(asyncio.sleep(0))
        assert drains == 1
        assert [queue.get_nowait() for _ in range(8)] == list(range(8))
        mailbox.put(queue.put_nowait, 8)  # after a drain, the next item schedules a new one
        loop.run_until_complete(asyncio.sleep(0))
        assert drains == 2
    finally:
        loop.close()


def test_a_closed_loop_refuses_items() -> None:
    loop = asyncio.new_event_loop()
    loop.close()
    with pytest.raises(RuntimeError):
        Mailbox(loop).put(asyncio.Queue().put_nowait, 1)


def test_a_producer_can_wait_until_the_loop_has_handled_its_items() -> None:
    async def scenario() -> list[str]:
        loop = asyncio.get_running_loop()
        mailbox = Mailbox(loop)
        queue: asyncio.Queue[int] = asyncio.Queue()
        events: list[str] = []

        async def consumer() -> None:
            await queue.get()
            events.append("consumed")

        task = asyncio.create_task(consumer())
        await asyncio.sleep(0)

        def produce() -> None:
            mailbox.put(queue.put_nowait, 1)
            mailbox.wait_delivered(timeout=5)
            events.append("producer resumed")

        await asyncio.to_thread(produce)
        await task
        return events

    assert asyncio.run(scenario()) == ["consumed", "producer resumed"]
