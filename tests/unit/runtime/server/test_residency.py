"""How long the model stays loaded (slm_runtime.residency): the last request's keep_alive decides."""

from __future__ import annotations

import asyncio

import pytest

from slm_runtime.residency import Residency


class Unloads:
    def __init__(self) -> None:
        self.count = 0

    async def __call__(self) -> None:
        self.count += 1


def test_the_last_request_s_keep_alive_decides_and_a_new_request_calls_it_off() -> None:
    async def scenario() -> None:
        unloads = Unloads()
        residency = Residency(unloads)
        residency.hold()
        residency.hold()
        residency.release(0)  # another request still holds the model
        await asyncio.sleep(0.02)
        assert (unloads.count, residency.expires_at) == (0, None)
        residency.release(0.05)
        assert residency.expires_at is not None
        residency.hold()  # arrives before the unload: keeps the model
        await asyncio.sleep(0.1)
        assert (unloads.count, residency.expires_at) == (0, None)
        residency.release(0)
        await asyncio.sleep(0.02)
        assert unloads.count == 1 and residency.expires_at is None

    asyncio.run(scenario())


@pytest.mark.parametrize("keep_alive", [None, -1, 2.5e11])
def test_no_keep_alive_a_negative_one_or_beyond_a_century_keeps_the_model(keep_alive: float | None) -> None:
    async def scenario() -> None:
        unloads = Unloads()
        residency = Residency(unloads)
        residency.hold()
        residency.release(keep_alive)
        await asyncio.sleep(0.02)
        assert (unloads.count, residency.expires_at) == (0, None)

    asyncio.run(scenario())


def test_a_server_that_does_not_honour_keep_alive_keeps_the_model_whatever_requests_say() -> None:
    """In a pod (the operator sets ``honour_keep_alive`` off), an Ollama client's keep_alive must not unload the
    model that the pod exists to serve."""

    async def scenario() -> None:
        unloads = Unloads()
        residency = Residency(unloads, honour=False)
        residency.hold()
        residency.release(0)
        await asyncio.sleep(0.02)
        assert (unloads.count, residency.expires_at) == (0, None)

    asyncio.run(scenario())
