"""kopfpatch.share_toggle_waits: waiters of kopf's toggle set share one wait and still return when the state is
reached (the restart barrier of kopf's indexes)."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits.aiotoggles import ToggleSet

from slm_operator.controller.kopfpatch import share_toggle_waits


def test_waiters_return_once_every_toggle_is_dropped() -> None:
    assert share_toggle_waits()
    assert share_toggle_waits()  # applied once

    async def scenario() -> list[int]:
        toggles = ToggleSet(all)
        blockers = [await toggles.make_toggle(name=str(i)) for i in range(50)]
        done: list[int] = []

        async def waiter(number: int) -> None:
            await toggles.wait_for(True)
            done.append(number)

        tasks = [asyncio.create_task(waiter(i)) for i in range(200)]
        await asyncio.sleep(0)
        for blocker in blockers[:-1]:
            await toggles.drop_toggle(blocker)
        await asyncio.sleep(0.01)
        assert done == []  # one toggle still off: nobody passes
        tasks[0].cancel()  # a waiter that gives up does not cancel the others' wait
        await toggles.drop_toggle(blockers[-1])
        await asyncio.gather(*tasks[1:])
        await toggles.wait_for(True)  # already on: returns at once
        return done

    assert sorted(asyncio.run(scenario())) == list(range(1, 200))
