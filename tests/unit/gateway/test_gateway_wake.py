"""Scale to zero at the gateway: requests for a model without a ready pod are held (bounded in count and time),
the model is woken (direct mode: ScaledObject annotation and scale 0 -> 1; metric mode: nothing but the gauge),
and every held request is answered once a pod is ready, or refused with 503 and Retry-After."""

from __future__ import annotations

import asyncio

import httpx
import ollama
import openai
import pytest
from gateway_fast import Gateway, RecordingActions, Runtime, endpoint_slice, run, slm, wait_for

from slm_gateway.activator import DirectActivator
from slm_gateway.catalog import Delete, Kind, model_of
from slm_gateway.metrics import HOLD_SECONDS, REQUESTS_TOTAL
from slm_operator.api.gateway import GATEWAY_HELD, GATEWAY_INFLIGHT
from slm_runtime.engines.fake import FakeEngine

ZERO = slm("ns", "m", phase="ScaledToZero", min_replicas=0)


def test_held_requests_are_answered_when_a_pod_gets_ready_and_the_wake_is_undone() -> None:
    actions = RecordingActions()
    activator = DirectActivator(actions, retry_seconds=0.01)

    async def scenario() -> None:
        async with Runtime(FakeEngine(2, reply="awake"), 2).run() as rt, Gateway(activator=activator).run() as gw:
            gw.sync([ZERO])
            assert gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 0  # exported before any request, for KEDA
            client = openai.AsyncOpenAI(base_url=f"{gw.url}/v1", api_key="x", max_retries=0)
            held = [
                asyncio.create_task(client.completions.create(model="ns/m", prompt=f"{i}", max_tokens=3))
                for i in range(5)
            ]
            by_bare_name = asyncio.create_task(ollama.AsyncClient(host=gw.url).generate(model="m", prompt="Hi"))
            await wait_for(lambda: gw.metric(GATEWAY_HELD, model="ns/m") == 6, "six held requests")
            assert gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 6
            await activator.settled()
            assert actions.calls == [("activate", "ns", "m")]
            # The pod comes up not ready, then ready: only the second event releases the requests.
            gw.upsert(Kind.SLICE, endpoint_slice("ns", "m", [(*rt.address, False)]))
            await asyncio.sleep(0.05)
            assert not any(task.done() for task in [*held, by_bare_name])
            gw.upsert(Kind.SLM, slm("ns", "m", phase="Ready", min_replicas=0))
            gw.upsert(Kind.SLICE, endpoint_slice("ns", "m", [rt.address]))
            answers = await asyncio.gather(*held)
            assert [a.choices[0].text for a in answers] == ["awa"] * 5
            assert (await by_bare_name).response == "awake"
            await wait_for(lambda: ("deactivate", "ns", "m") in actions.calls, "the annotation to be removed")
            assert actions.calls == [("activate", "ns", "m"), ("deactivate", "ns", "m")]
            assert gw.metric(GATEWAY_HELD, model="ns/m") == gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 0
            assert gw.metric(f"{HOLD_SECONDS}_count", model="ns/m") == 6
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="ns/m", code="200") == 6, "the request count"
            )
            # Awake, a model's requests are not held and nothing is written.
            await client.completions.create(model="ns/m", prompt="again", max_tokens=1)
            assert len(actions.calls) == 2

    run(scenario)


def test_metric_mode_only_holds_and_the_gauge_shows_the_held_requests() -> None:
    async def scenario() -> None:
        async with Runtime(FakeEngine()).run() as rt, Gateway(wake="metric").run() as gw:
            gw.sync([ZERO])
            task = asyncio.create_task(ollama.AsyncClient(host=gw.url).generate(model="ns/m", prompt="Hi"))
            await wait_for(lambda: gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 1, "the request to be held")
            text = gw.dispatcher.metrics.render().decode()
            assert f'{GATEWAY_INFLIGHT}{{model="ns/m"}} 1.0' in text  # what KEDA's activation query reads
            gw.upsert(Kind.SLICE, endpoint_slice("ns", "m", [rt.address]))
            assert (await task).response

    run(scenario)


@pytest.mark.parametrize("path", ["/v1/completions", "/api/generate"])
def test_a_request_held_past_the_wake_timeout_gets_503_with_retry_after(path: str) -> None:
    async def scenario() -> None:
        async with Gateway(wake="metric", wake_timeout=0.2, retry_after=7).run() as gw, httpx.AsyncClient() as http:
            gw.sync([ZERO])
            response = await http.post(f"{gw.url}{path}", json={"model": "ns/m", "prompt": "Hi"})
            assert response.status_code == 503 and response.headers["retry-after"] == "7"
            error = response.json()["error"]
            if path.startswith("/v1"):
                assert error["code"] == "model_not_ready" and "after 0.2s" in error["message"]
            else:
                assert isinstance(error, str) and "no ready replica" in error
            assert gw.metric(GATEWAY_HELD, model="ns/m") == 0
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="ns/m", code="503") == 1, "the request count"
            )

    run(scenario)


def test_requests_beyond_max_held_are_refused_at_once() -> None:
    async def scenario() -> None:
        async with (
            Runtime(FakeEngine()).run() as rt,
            Gateway(wake="metric", max_held=2).run() as gw,
            httpx.AsyncClient(base_url=gw.url) as http,
        ):
            gw.sync([ZERO])
            body = {"model": "ns/m", "messages": [{"role": "user", "content": "Hi"}], "stream": False}
            held = [asyncio.create_task(http.post("/api/chat", json=body)) for _ in range(2)]
            await wait_for(lambda: gw.metric(GATEWAY_HELD, model="ns/m") == 2, "two held requests")
            over = await http.post("/v1/chat/completions", json=body)
            assert over.status_code == 503 and over.headers["retry-after"] == "5"
            assert over.json()["error"]["code"] == "server_busy"
            gw.upsert(Kind.SLICE, endpoint_slice("ns", "m", [rt.address]))
            assert [r.status_code for r in await asyncio.gather(*held)] == [200, 200]

    run(scenario)


def test_a_client_that_gives_up_while_held_is_no_longer_counted() -> None:
    actions = RecordingActions()
    activator = DirectActivator(actions, retry_seconds=0.01)

    async def scenario() -> None:
        async with Gateway(activator=activator).run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            gw.sync([ZERO])
            task = asyncio.create_task(http.post("/api/generate", json={"model": "ns/m", "prompt": "Hi"}))
            await wait_for(lambda: gw.metric(GATEWAY_HELD, model="ns/m") == 1, "the request to be held")
            task.cancel()
            await wait_for(lambda: gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 0, "the held request to be dropped")
            assert gw.metric(GATEWAY_HELD, model="ns/m") == 0
            await wait_for(lambda: len(actions.calls) == 2, "activate, then deactivate")
            assert [c[0] for c in actions.calls] == ["activate", "deactivate"]
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="ns/m", code="499") == 1, "the request count"
            )

    run(scenario)


def test_a_model_deleted_or_failed_while_held_answers_at_once() -> None:
    async def scenario() -> None:
        async with Gateway(wake="metric").run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            gw.sync([ZERO, slm("ns", "other", phase="Loading")])
            deleted = asyncio.create_task(http.post("/v1/completions", json={"model": "ns/m", "prompt": "Hi"}))
            failing = asyncio.create_task(http.post("/api/generate", json={"model": "ns/other", "prompt": "Hi"}))
            await wait_for(lambda: gw.metric(GATEWAY_HELD) == 2, "two held requests")
            gw.dispatcher.apply(Delete(Kind.SLM, ZERO))
            gw.upsert(Kind.SLM, slm("ns", "other", phase="Failed"))
            assert (await deleted).status_code == 404
            failed = await failing
            assert failed.status_code == 503 and "failed" in failed.json()["error"]
            # A model that is Failed with no pod is refused without holding.
            again = await http.post("/api/generate", json={"model": "ns/other", "prompt": "Hi"})
            assert again.status_code == 503 and gw.metric(GATEWAY_HELD) == 0

    run(scenario)


def test_the_activator_retries_a_failed_write_and_converges_on_the_latest_wish() -> None:
    class Flaky(RecordingActions):
        def __init__(self) -> None:
            super().__init__()
            self.failures = 2

        def activate(self, namespace: str, name: str) -> None:
            if self.failures:
                self.failures -= 1
                raise RuntimeError("apiserver unavailable")
            super().activate(namespace, name)

    actions = Flaky()
    activator = DirectActivator(actions, retry_seconds=0.01)

    async def scenario() -> None:
        entry = model_of(ZERO)
        assert entry is not None
        await activator.start()
        try:
            activator.want(entry)
            await wait_for(lambda: actions.calls == [("activate", "ns", "m")], "the activation after two failures")
            activator.release("ns/m")
            activator.want(entry)  # wanted again before the release was carried out: stays active
            await activator.settled()
            assert actions.calls == [("activate", "ns", "m")] and activator.active == {"ns/m"}
            activator.release("ns/m")
            await activator.settled()
            assert actions.calls[-1] == ("deactivate", "ns", "m") and not activator.active
        finally:
            await activator.stop()

    run(scenario)
