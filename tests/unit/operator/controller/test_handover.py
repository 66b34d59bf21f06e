"""kopf's event handler of SLMDeployments hands each event over to a task of the operator's own and returns at once
(kopf's worker lets the event's body go); the task waits for the own watches' first listings, then reconciles."""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
from test_resync import KEY, RecordingWriter, controller, slm

from slm_operator.controller import handlers


def test_the_handler_returns_at_once_and_the_reconcile_follows_the_listings() -> None:
    async def scenario() -> list[str]:
        writer = RecordingWriter()
        ctl = controller(writer)
        ctl.started = False
        memo: Any = kopf.Memo()
        memo.controller = ctl
        await asyncio.wait_for(
            handlers.on_spec(type="ADDED", namespace=KEY[0], name=KEY[1], body=kopf.Body(slm()), memo=memo), 1
        )
        await asyncio.sleep(0.01)
        assert writer.writes == [] and len(ctl.tasks) == 1  # handed over; waiting for the listings
        ctl.listed.set()
        await asyncio.wait_for(asyncio.gather(*ctl.tasks), 5)
        memo.resync_task.cancel()
        return sorted(writer.writes)

    assert asyncio.run(scenario()) == ["apply Deployment/assistant", "apply Service/assistant"]


def test_the_handler_keeps_each_slmdeployments_record_and_drops_it_when_deleted() -> None:
    async def scenario() -> None:
        ctl = controller(RecordingWriter())
        ctl.listed.set()
        memo: Any = kopf.Memo()
        memo.controller = ctl
        records = ctl.indexes["slm_bodies"]
        changed = {**slm(), "metadata": {**slm()["metadata"], "generation": 2, "resourceVersion": "2"}}
        await handlers.on_spec(type="MODIFIED", namespace=KEY[0], name=KEY[1], body=kopf.Body(changed), memo=memo)
        assert [kept.version for kept in records.get(KEY)] == ["2"]  # replaced, not added
        await handlers.on_spec(type="DELETED", namespace=KEY[0], name=KEY[1], body=kopf.Body(changed), memo=memo)
        assert records.get(KEY) == []
        await asyncio.wait_for(asyncio.gather(*ctl.tasks), 5)
        assert KEY not in ctl.inputs and KEY not in ctl.statuses

    asyncio.run(scenario())
