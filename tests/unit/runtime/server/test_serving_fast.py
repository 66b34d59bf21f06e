"""Server behaviour both APIs share, on the fake engine: a full queue answers 503, a client that hangs up stops its
generation and frees its slot, the request timeout, the API key, routing errors, health and readiness."""

from __future__ import annotations

import asyncio
import json

import httpx
from runtime_fast import API_KEY, MODEL, FastApp, serve, wait_for

from slm_runtime.engines.fake import FakeEngine
from slm_runtime.errors import OLLAMA_SERVER_BUSY
from slm_runtime.settings import RuntimeSettings

REPLY = FakeEngine().reply
GENERATE = {"model": MODEL, "prompt": "Hi", "stream": False}


def test_a_full_queue_answers_503_in_each_api_s_shape_and_the_queue_drains() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        queued = asyncio.create_task(app.client.post("/v1/completions", json={"model": MODEL, "prompt": "Hi"}))
        await wait_for(lambda: app.service.scheduler.waiting == 1, "the second request to queue")
        ollama = await app.client.post("/api/generate", json=GENERATE)
        openai = await app.client.post("/v1/chat/completions", json={"model": MODEL, "messages": [{"role": "user"}]})
        assert (ollama.status_code, ollama.json()) == (503, {"error": OLLAMA_SERVER_BUSY})
        assert ollama.headers["retry-after"] == "1"
        assert openai.status_code == 503 and openai.json()["error"]["code"] == "server_busy"
        assert app.metric("slm_requests_total", outcome="busy") == 2
        assert app.metric("slm_requests_inflight") == 2
        engine.gate.set()
        first, second = await running, await queued
        assert first.json()["response"] == REPLY
        assert second.json()["choices"][0]["text"] == REPLY[:16]  # /v1/completions' default max_tokens
        assert app.metric("slm_requests_inflight") == 0

    serve(scenario, engine, max_queue=1)


def test_hanging_up_mid_stream_stops_the_generation_and_frees_the_slot() -> None:
    engine = FakeEngine(token_delay=0.01)

    async def scenario(app: FastApp) -> None:
        status, chunks = await app.hang_up(
            "/api/generate", {"model": MODEL, "prompt": "Hi"}, after=lambda received: len(received) >= 3
        )
        assert status == 200
        streamed = "".join(json.loads(line)["response"] for chunk in chunks for line in chunk.splitlines())
        assert 3 <= len(streamed) < len(REPLY)
        await wait_for(lambda: app.service.scheduler.running == 0, "the slot to be handed back")
        assert engine.busy_slots == set()
        assert app.metric("slm_requests_total", api="ollama", outcome="cancelled") == 1
        after = await app.client.post("/api/generate", json=GENERATE)
        assert after.json()["response"] == REPLY

    serve(scenario, engine)


def test_a_stream_holds_the_model_until_its_last_chunk_and_a_hang_up_lets_it_go() -> None:
    engines = [FakeEngine(token_delay=0.01)]

    def loader(_: RuntimeSettings) -> FakeEngine:  # the first engine, then a fresh one for each load after it
        if engines[-1].started:
            engines.append(FakeEngine(token_delay=0.01))
        return engines[-1]

    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "prompt": "Hi", "keep_alive": 0}
        held_while_streaming: list[int] = []

        def three_chunks_in(received: list[bytes]) -> bool:
            if len(received) < 3:
                return False
            held_while_streaming.append(app.service.residency.holds)
            return True

        status, _ = await app.hang_up("/api/generate", body, after=three_chunks_in)
        assert status == 200 and held_while_streaming[0] == 1
        await wait_for(lambda: not app.service.loaded, "keep_alive 0 to unload the model once the client left")
        assert app.service.residency.holds == 0
        streamed = await app.client.post("/api/generate", json=body)  # loads it again, then lets it go
        assert "".join(json.loads(line)["response"] for line in streamed.text.splitlines()) == REPLY
        await wait_for(lambda: not app.service.loaded, "keep_alive 0 to unload the model after the stream")
        assert len(engines) == 2

    serve(scenario, engines[0], loader=loader)


def test_hanging_up_on_a_whole_answer_stops_the_generation() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        engine.gate.clear()  # after the warm-up: generations now wait until the test opens it
        body = {"model": MODEL, "messages": [{"role": "user", "content": "Hi"}]}
        status, chunks = await app.hang_up(
            "/v1/chat/completions", body, after=lambda _: len(engine.started) == 2 and engine.busy_slots == {0}
        )
        assert (status, chunks) == (499, [])
        await wait_for(lambda: engine.busy_slots == set(), "the engine to stop")
        await wait_for(lambda: app.service.scheduler.running == 0, "the slot to be handed back")
        assert app.metric("slm_requests_total", api="openai", outcome="cancelled") == 1

    serve(scenario, engine)


def test_hanging_up_while_queued_leaves_the_queue() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        status, _ = await app.hang_up("/api/generate", GENERATE, after=lambda _: app.service.scheduler.waiting == 1)
        assert status == 499
        assert app.service.scheduler.waiting == 0
        engine.gate.set()
        assert (await running).json()["response"] == REPLY
        assert len(engine.started) == 2  # the warm-up and the first request: the one that left never started
        assert app.metric("slm_requests_total", outcome="cancelled") == 1

    serve(scenario, engine)


def test_a_generation_past_the_request_timeout_ends_with_a_timeout_error() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        engine.gate.clear()  # after the warm-up: generations now wait until the test opens it
        response = await app.client.post("/api/generate", json=GENERATE)
        assert response.status_code == 504
        assert "request timeout of 0.3s" in response.json()["error"]
        await wait_for(lambda: engine.busy_slots == set(), "the engine to stop")
        await wait_for(lambda: app.service.scheduler.running == 0, "the slot to be handed back")

    serve(scenario, engine, request_timeout=0.3)


def test_the_api_key_guards_every_route_but_health_and_metrics() -> None:
    async def scenario(app: FastApp) -> None:
        bare = httpx.AsyncClient(transport=httpx.ASGITransport(app=app.asgi), base_url="http://slm.test")
        async with bare:
            for path in ("/healthz", "/readyz", "/metrics", "/"):
                assert (await bare.get(path)).status_code == 200, path
            ollama = await bare.get("/api/tags")
            assert ollama.status_code == 401 and "missing API key" in ollama.json()["error"]
            assert ollama.headers["www-authenticate"] == "Bearer"
            wrong = await bare.get("/v1/models", headers={"Authorization": "Bearer nope"})
            assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert (await app.client.post("/api/generate", json=GENERATE)).json()["response"] == REPLY

    serve(scenario, api_key=API_KEY)


def test_unknown_routes_and_methods_answer_in_the_api_s_shape() -> None:
    async def scenario(app: FastApp) -> None:
        ollama = await app.client.get("/api/nothing")
        assert (ollama.status_code, ollama.json()) == (404, {"error": "Not Found"})
        openai = await app.client.get("/v1/nothing")
        assert openai.status_code == 404
        assert openai.json()["error"] == {
            "message": "Not Found",
            "type": "invalid_request_error",
            "param": None,
            "code": "not_found",
        }
        wrong = await app.client.get("/v1/chat/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"

    serve(scenario)


def test_health_readiness_and_metrics_of_the_model_and_its_steps() -> None:
    async def scenario(app: FastApp) -> None:
        assert (await app.client.get("/healthz")).json() == {"status": "ok"}
        assert (await app.client.get("/readyz")).json() == {"status": "ready", "model": MODEL}
        assert app.metric("slm_model_info", engine="fake", format="gguf") == 1
        body = {**GENERATE, "options": {"num_predict": 3}}
        assert (await app.client.post("/api/generate", json=body)).json()["eval_count"] == 3
        assert app.metric("slm_batch_sequences_count") == 4  # the prompt's step and one per token
        assert app.metric("slm_batch_tokens_sum") == len(app.engine.started[-1].prompt) + 3

    serve(scenario)


def test_a_model_that_fails_to_load_is_reported_by_health_and_requests() -> None:
    def broken(_: object) -> FakeEngine:
        raise RuntimeError("no such model")

    async def scenario(app: FastApp) -> None:
        health = await app.client.get("/healthz")
        assert (health.status_code, health.json()["error"]) == (500, "RuntimeError")
        ready = await app.client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "failed")
        response = await app.client.post("/api/generate", json=GENERATE)
        assert response.status_code == 503 and "failed to load: RuntimeError" in response.json()["error"]

    serve(scenario, loader=broken)


def test_a_draining_server_is_not_ready_admits_nothing_new_and_finishes_what_runs() -> None:
    engine = FakeEngine()

    async def scenario(app: FastApp) -> None:
        running = await app.hold_slot()
        app.service.shutdown.drain()  # what SIGTERM does in `serve`
        ready = await app.client.get("/readyz")
        assert (ready.status_code, ready.json()["status"]) == (503, "stopping")
        refused = await app.client.post("/api/generate", json=GENERATE)
        assert (refused.status_code, refused.json()) == (503, {"error": OLLAMA_SERVER_BUSY})
        engine.gate.set()
        assert (await running).json()["response"] == REPLY

    serve(scenario, engine)
