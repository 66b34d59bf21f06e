"""The gateway in front of real runtimes (fake engine), driven by the official openai and ollama clients:
routing by model name, the 404 and 401 shapes, streaming byte for byte, cancellation on disconnect, endpoint
choice, API keys, listings and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
from gateway_fast import MODEL, Gateway, Runtime, Scripted, endpoint_slice, run, slm, sse_data, wait_for
from openai.types.chat import ChatCompletionMessageParam

from slm_gateway.metrics import REQUESTS_TOTAL, TIME_TO_FIRST_BYTE, UPSTREAM_ERRORS
from slm_operator.api.gateway import GATEWAY_INFLIGHT
from slm_runtime.engines.fake import FakeEngine

CHAT: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hi"}]
VOLATILE = {"id", "created", "created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration"}


def oai(gateway: Gateway, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)


def oll(gateway: Gateway, key: str | None = None) -> ollama.AsyncClient:
    headers = {"Authorization": f"Bearer {key}"} if key else None
    return ollama.AsyncClient(host=gateway.url, headers=headers)


def stable(value: Any) -> Any:
    """``value`` without the fields that differ between two identical requests (ids, times)."""
    if isinstance(value, dict):
        return {k: stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [stable(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------------- routing


def test_requests_reach_the_model_they_name_by_id_or_unique_bare_name() -> None:
    async def scenario() -> None:
        async with (
            Runtime(FakeEngine(reply="from team a")).run() as a,
            Runtime(FakeEngine(reply="from team b")).run() as b,
            Gateway().run() as gw,
        ):
            gw.sync(
                [slm("team-a", "assistant"), slm("team-b", "assistant"), slm("team-b", "solo")],
                [
                    endpoint_slice("team-a", "assistant", [a.address]),
                    endpoint_slice("team-b", "assistant", [b.address]),
                    endpoint_slice("team-b", "solo", [b.address]),
                ],
            )
            client = oai(gw)
            for model, reply in [("team-a/assistant", "from team a"), ("team-b/assistant", "from team b")]:
                answer = await client.chat.completions.create(model=model, messages=CHAT)
                assert answer.choices[0].message.content == reply
                assert answer.model == MODEL  # the runtime's own name: the body passes through untouched
            generated = await oll(gw).generate(model="solo", prompt="Hi")
            assert generated.response == "from team b"
            embedded = await oll(gw).embed(model="team-a/assistant", input="abc")
            assert len(embedded.embeddings[0]) == 8
            shown = await oll(gw).show("team-a/assistant")
            assert shown.modelfile
            # "assistant" exists in two namespaces: a bare name does not say which.
            with pytest.raises(openai.NotFoundError) as missing:
                await client.completions.create(model="assistant", prompt="Hi")
            assert missing.value.body == {
                "message": 'model "assistant" not found, try pulling it first',
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
            with pytest.raises(ollama.ResponseError) as not_found:
                await oll(gw).chat(model="team-c/nope", messages=CHAT)
            assert not_found.value.status_code == 404
            assert not_found.value.error == 'model "team-c/nope" not found, try pulling it first'
            assert gw.metric(f"{REQUESTS_TOTAL}_total", model="", code="404") == 2
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="team-a/assistant", code="200") == 3,
                "the request count",
            )

    run(scenario)


def test_bad_bodies_and_routes_get_each_api_s_error_shape() -> None:
    async def scenario() -> None:
        async with Gateway().run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            gw.sync()
            no_model = await http.post("/v1/chat/completions", json={"messages": CHAT})
            assert no_model.status_code == 400 and no_model.json()["error"]["param"] == "model"
            not_json = await http.post("/api/generate", content=b"{nope")
            assert not_json.status_code == 400 and "invalid JSON" in not_json.json()["error"]
            too_big = await http.post("/api/chat", content=b"x" * (gw.settings.max_body_bytes + 1))
            assert too_big.status_code == 413
            unknown = await http.get("/api/nothing")
            assert unknown.status_code == 404 and isinstance(unknown.json()["error"], str)
            wrong = await http.get("/v1/chat/completions")
            assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"
            assert (await http.get("/")).text == "Ollama is running"
            assert (await http.get("/api/version")).json()["version"]
            assert (await http.get("/healthz")).status_code == 200

    run(scenario)


def test_readyz_waits_for_both_watches_to_list() -> None:
    async def scenario() -> None:
        async with Gateway().run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            assert (await http.get("/readyz")).status_code == 503
            gw.sync()
            assert (await http.get("/readyz")).status_code == 200

    run(scenario)


def test_listings_show_ready_and_scaled_to_zero_models_by_id() -> None:
    async def scenario() -> None:
        async with Runtime(FakeEngine()).run() as rt, Gateway().run() as gw:
            gw.sync(
                [
                    slm("a", "up"),
                    slm("a", "zero", phase="ScaledToZero", min_replicas=0),
                    slm("b", "loading", phase="Loading"),
                ],
                [endpoint_slice("a", "up", [rt.address])],
            )
            listed = await oai(gw).models.list()
            assert [m.id for m in listed.data] == ["a/up", "a/zero"]
            assert (await oai(gw).models.retrieve("a/zero")).id == "a/zero"
            tags = await oll(gw).list()
            assert [m.model for m in tags.models] == ["a/up", "a/zero"]
            assert tags.models[0].size == 1234 and tags.models[0].digest == "ab" * 32
            running = await oll(gw).ps()
            assert [m.model for m in running.models] == ["a/up"]
            with pytest.raises(openai.NotFoundError):
                await oai(gw).models.retrieve("b/loading")

    run(scenario)


# ----------------------------------------------------------------------------------------------- streaming


def test_scripted_bytes_chunks_and_headers_pass_through_unchanged() -> None:
    chunks = [b'data: {"a":', b' 1}\n\ndata: {"b": "\xc3', b'\xa9"}\n\n', b"\xff\x00 raw", b"data: [DONE]\n\n"]
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"x-request-id", b"req-1"),
        (b"cache-control", b"no-cache"),
        (b"set-cookie", b"a=1"),
        (b"set-cookie", b"b=2"),
    ]

    async def scenario() -> None:
        async with (
            Scripted(chunks, headers=headers, pause=0.02).run() as up,
            Gateway().run() as gw,
            httpx.AsyncClient(base_url=gw.url) as http,
        ):
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [up.address])])
            sent = b'{"stream": true,\n "model": "ns/m", "messages": [{"role": "user", "content": "\xc3\xa9"}]}'
            received: list[bytes] = []
            async with http.stream(
                "POST", "/v1/chat/completions?x=1", content=sent, headers={"X-Trace": "t1", "Authorization": "Bearer k"}
            ) as response:
                async for chunk in response.aiter_raw():
                    received.append(chunk)
                got_headers = response.headers
            assert b"".join(received) == b"".join(chunks)
            assert len(received) == len(chunks)  # each upstream chunk arrives on its own, as it is produced
            assert got_headers["content-type"] == "text/event-stream; charset=utf-8"
            assert got_headers["x-request-id"] == "req-1" and got_headers.get_list("set-cookie") == ["a=1", "b=2"]
            (request,) = up.requests
            assert request["body"] == sent.replace(b'"ns/m"', f'"{MODEL}"'.encode())
            assert request["path"] == "/v1/chat/completions" and request["query"] == b"x=1"
            assert request["headers"][b"x-trace"] == b"t1"
            assert request["headers"][b"authorization"] == b"Bearer k"  # no gateway keys: passed through
            assert gw.metric(f"{TIME_TO_FIRST_BYTE}_count", model="ns/m") == 1

    run(scenario)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": CHAT, "stream": True, "stream_options": {"include_usage": True}}),
        ("/v1/completions", {"prompt": "Hi", "stream": True}),
        ("/api/chat", {"messages": CHAT}),
        ("/api/generate", {"prompt": "Hi"}),
        ("/api/chat", {"messages": CHAT, "stream": False}),
    ],
)
def test_runtime_streams_through_the_gateway_as_they_come_from_the_runtime(path: str, body: dict[str, Any]) -> None:
    """The same request to the runtime and through the gateway: the same lines, one for one (SSE events and
    NDJSON lines), ids and times aside; and the same content type."""

    async def scenario() -> None:
        async with (
            Runtime(FakeEngine(token_delay=0.002)).run() as rt,
            Gateway().run() as gw,
            httpx.AsyncClient() as http,
        ):
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [rt.address])])
            direct = await http.post(f"http://127.0.0.1:{rt.port}{path}", json={**body, "model": MODEL})
            proxied = await http.post(f"{gw.url}{path}", json={**body, "model": "ns/m"})
            assert proxied.status_code == direct.status_code == 200
            assert proxied.headers["content-type"] == direct.headers["content-type"]
            if path.startswith("/v1"):
                assert stable(sse_data(proxied.text)) == stable(sse_data(direct.text))
                assert proxied.text.endswith("data: [DONE]\n\n")
            else:
                lines = [stable(json.loads(line)) for line in proxied.text.splitlines()]
                assert lines == [stable(json.loads(line)) for line in direct.text.splitlines()]

    run(scenario)


def test_official_clients_stream_through_the_gateway() -> None:
    async def scenario() -> None:
        async with Runtime(FakeEngine(reply="streamed")).run() as rt, Gateway().run() as gw:
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [rt.address])])
            stream = await oai(gw).chat.completions.create(model="ns/m", messages=CHAT, stream=True)
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
            assert text == "streamed"
            parts = [p.message.content async for p in await oll(gw).chat(model="m", messages=CHAT, stream=True)]
            assert "".join(p or "" for p in parts) == "streamed"

    run(scenario)


def test_a_client_that_goes_away_stops_the_generation_upstream() -> None:
    engine = FakeEngine(reply="x" * 1000, token_delay=0.01)  # 10 s of tokens unless stopped

    async def scenario() -> None:
        async with Runtime(engine).run() as rt, Gateway().run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [rt.address])])
            body = {"model": "ns/m", "prompt": "Hi", "stream": True}
            warm_up = len(engine.started)
            async with http.stream("POST", "/api/generate", json=body) as response:
                async for _ in response.aiter_lines():
                    break  # one token, then hang up
                assert engine.busy_slots
            await wait_for(lambda: not engine.busy_slots, "the runtime to stop generating", timeout=2)
            assert len(engine.started) == warm_up + 1
            await wait_for(lambda: gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 0, "in-flight to drop")
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="ns/m", code="499") == 1, "the request count"
            )
            assert not gw.dispatcher.endpoint_load

    run(scenario)


# ----------------------------------------------------------------------------------------- endpoint choice


def test_requests_go_to_the_pod_with_the_fewest_in_flight() -> None:
    engines = [FakeEngine(2), FakeEngine(2)]

    async def scenario() -> None:
        async with Runtime(engines[0], 2).run() as a, Runtime(engines[1], 2).run() as b, Gateway().run() as gw:
            for engine in engines:
                engine.gate.clear()
            gw.sync(
                [slm("ns", "m")],
                [endpoint_slice("ns", "m", [a.address], name="s1"), endpoint_slice("ns", "m", [b.address], name="s2")],
            )
            client = oll(gw)
            first = asyncio.create_task(client.generate(model="ns/m", prompt="one"))
            await wait_for(lambda: sum(len(e.busy_slots) for e in engines) == 1, "the first request to run")
            second = asyncio.create_task(client.generate(model="ns/m", prompt="two"))
            await wait_for(lambda: all(len(e.busy_slots) == 1 for e in engines), "one request on each pod")
            third = asyncio.create_task(client.generate(model="ns/m", prompt="three"))
            await wait_for(lambda: sum(len(e.busy_slots) for e in engines) == 3, "the third request to run")
            assert sorted(gw.dispatcher.endpoint_load.values()) == [1, 2]
            for engine in engines:
                engine.gate.set()
            await asyncio.gather(first, second, third)
            await wait_for(lambda: not gw.dispatcher.endpoint_load, "every endpoint to be released")

    run(scenario)


def test_prefix_affinity_sends_a_shared_prefix_to_one_pod() -> None:
    engines = [FakeEngine(reply="ok") for _ in range(3)]

    async def scenario() -> None:
        async with contextlib.AsyncExitStack() as stack:
            runtimes = [await stack.enter_async_context(Runtime(e).run()) for e in engines]
            gw = await stack.enter_async_context(Gateway(prefix_affinity=True, prefix_chars=40).run())
            gw.sync(
                [slm("ns", "m")],
                [endpoint_slice("ns", "m", [r.address], name=f"s{i}") for i, r in enumerate(runtimes)],
            )
            client = oai(gw)
            warm_up = [len(e.started) for e in engines]

            def counts() -> list[int]:
                return [len(e.started) - before for e, before in zip(engines, warm_up, strict=True)]

            system: ChatCompletionMessageParam = {
                "role": "system",
                "content": "You are the enterprise assistant of ACME. " * 5,
            }
            for question in ("a", "b", "c", "d", "e", "f"):
                messages: list[ChatCompletionMessageParam] = [system, {"role": "user", "content": question}]
                await client.chat.completions.create(model="ns/m", messages=messages)
            assert sorted(counts()) == [0, 0, 6], counts()
            for i in range(30):  # other prefixes spread over the pods
                await client.completions.create(model="ns/m", prompt=f"{i} is a different prompt", max_tokens=1)
            assert all(n > 1 for n in counts()), counts()

    run(scenario)


def test_a_pod_that_refuses_connections_is_skipped_and_counted() -> None:
    async def scenario() -> None:
        async with Runtime(FakeEngine(reply="alive")).run() as rt, Gateway().run() as gw:
            closed = ("127.0.0.1", 1)  # nothing listens on port 1
            gw.sync(
                [slm("ns", "m"), slm("ns", "dead")],
                [
                    endpoint_slice("ns", "m", [closed], name="s1"),
                    endpoint_slice("ns", "m", [rt.address], name="s2"),
                    endpoint_slice("ns", "dead", [closed]),
                ],
            )
            for _ in range(4):
                answer = await oll(gw).generate(model="ns/m", prompt="Hi")
                assert answer.response == "alive"
            assert gw.metric(f"{UPSTREAM_ERRORS}_total", model="ns/m", reason="connect") >= 1
            with pytest.raises(openai.InternalServerError) as failed:
                await oai(gw).completions.create(model="ns/dead", prompt="Hi")
            assert failed.value.status_code == 502
            assert failed.value.body["code"] == "upstream_unavailable"  # type: ignore[index]

    run(scenario)


def test_a_response_broken_off_upstream_is_broken_off_for_the_client_too() -> None:
    chunks = [b'{"response": "a", "done": false}\n', b'{"response": "b", "done": false}\n', b"never sent"]
    headers = [(b"content-type", b"application/x-ndjson")]

    async def scenario() -> None:
        async with (
            Scripted(chunks, headers=headers, pause=0.02, fail_after=2).run() as up,
            Gateway().run() as gw,
            httpx.AsyncClient(base_url=gw.url) as http,
        ):
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [up.address])])
            received: list[bytes] = []

            async def read() -> None:
                async with http.stream("POST", "/api/generate", json={"model": "ns/m", "prompt": "Hi"}) as response:
                    async for chunk in response.aiter_raw():
                        received.append(chunk)

            with pytest.raises(httpx.RemoteProtocolError):  # not a short body that looks complete
                await read()
            assert b"".join(received) == b"".join(chunks[:2])
            await wait_for(lambda: gw.metric(GATEWAY_INFLIGHT, model="ns/m") == 0, "the request to end")
            assert gw.metric(f"{UPSTREAM_ERRORS}_total", model="ns/m", reason="protocol") == 1
            await wait_for(
                lambda: gw.metric(f"{REQUESTS_TOTAL}_total", model="ns/m", code="200") == 1, "the request count"
            )
            assert not gw.dispatcher.endpoint_load

    run(scenario)


# ---------------------------------------------------------------------------------------------------- keys


def _keys(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text("- key: sk-a\n  namespaces: [team-a]\n- key: sk-b\n  models: [team-b/assistant]\n")
    return path


def test_keys_gate_every_model_route_and_hide_other_models(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with (
            Scripted().run() as up,
            Gateway(keys_file=_keys(tmp_path)).run() as gw,
            httpx.AsyncClient(base_url=gw.url) as http,
        ):
            gw.sync(
                [slm("team-a", "x"), slm("team-b", "assistant"), slm("team-b", "secret")],
                [endpoint_slice(ns, n, [up.address]) for ns, n in [("team-a", "x"), ("team-b", "assistant")]],
            )
            with pytest.raises(openai.AuthenticationError) as no_key:
                await oai(gw, "wrong").chat.completions.create(model="team-a/x", messages=CHAT)
            assert no_key.value.body["code"] == "invalid_api_key"  # type: ignore[index]
            anonymous = await http.post("/api/generate", json={"model": "team-a/x", "prompt": "Hi"})
            assert anonymous.status_code == 401 and isinstance(anonymous.json()["error"], str)
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert (await http.get("/api/tags")).status_code == 401
            # A key sees and calls only its models; others look like models that do not exist.
            assert [m.id for m in (await oai(gw, "sk-a").models.list()).data] == ["team-a/x"]
            assert [m.model for m in (await oll(gw, "sk-b").list()).models] == ["team-b/assistant"]
            await oai(gw, "sk-a").completions.create(model="x", prompt="Hi")
            with pytest.raises(openai.NotFoundError):
                await oai(gw, "sk-a").completions.create(model="team-b/assistant", prompt="Hi")
            with pytest.raises(ollama.ResponseError) as hidden:
                await oll(gw, "sk-b").generate(model="team-b/secret", prompt="Hi")
            assert hidden.value.status_code == 404
            await oll(gw, "sk-b").generate(model="assistant", prompt="Hi")
            # The gateway's key is the gateway's: never sent to the model.
            assert len(up.requests) == 2 and all(b"authorization" not in r["headers"] for r in up.requests)

    run(scenario)


def test_without_gateway_keys_the_model_s_own_key_still_works() -> None:
    async def scenario() -> None:
        async with Runtime(FakeEngine(), flags={"api_key": "sk-model"}).run() as rt, Gateway().run() as gw:
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [rt.address])])
            answer = await oai(gw, "sk-model").completions.create(model="ns/m", prompt="Hi")
            assert answer.choices[0].text
            with pytest.raises(openai.AuthenticationError):
                await oai(gw, "sk-other").completions.create(model="ns/m", prompt="Hi")

    run(scenario)


def test_the_key_may_come_as_x_api_key_which_is_never_forwarded(tmp_path: Path) -> None:
    """The slm CLI sends the gateway key as X-API-Key through the apiserver's service proxy (which drops
    Authorization); X-API-Key wins over a bearer token, so a client may keep Authorization for something else."""

    async def scenario() -> None:
        async with (
            Scripted().run() as up,
            Gateway(keys_file=_keys(tmp_path)).run() as gw,
            httpx.AsyncClient(base_url=gw.url) as http,
        ):
            gw.sync(
                [slm("team-a", "x"), slm("team-b", "assistant")],
                [endpoint_slice(ns, n, [up.address]) for ns, n in [("team-a", "x"), ("team-b", "assistant")]],
            )
            by_header = openai.AsyncOpenAI(
                base_url=f"{gw.url}/v1", api_key="not-the-gateway-s", default_headers={"X-API-Key": "sk-a"}
            )
            assert [m.id for m in (await by_header.models.list()).data] == ["team-a/x"]
            await by_header.completions.create(model="x", prompt="Hi")
            ollama_client = ollama.AsyncClient(host=gw.url, headers={"X-API-Key": "sk-b"})
            assert [m.model for m in (await ollama_client.list()).models] == ["team-b/assistant"]
            await ollama_client.generate(model="assistant", prompt="Hi")
            # A wrong X-API-Key is not saved by a valid bearer token.
            with pytest.raises(openai.AuthenticationError) as wrong:
                await openai.AsyncOpenAI(
                    base_url=f"{gw.url}/v1", api_key="sk-a", default_headers={"X-API-Key": "sk-nope"}, max_retries=0
                ).models.list()
            assert "X-API-Key" in wrong.value.message
            refused = await http.post("/api/chat", json={"model": "team-a/x"}, headers={"X-API-Key": ""})
            assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
            sent = [
                {k: v for k, v in r["headers"].items() if k in (b"authorization", b"x-api-key")} for r in up.requests
            ]
            assert sent == [{}, {}]

    run(scenario)


def test_without_gateway_keys_x_api_key_is_dropped_and_authorization_kept() -> None:
    async def scenario() -> None:
        async with Scripted().run() as up, Gateway().run() as gw, httpx.AsyncClient(base_url=gw.url) as http:
            gw.sync([slm("ns", "m")], [endpoint_slice("ns", "m", [up.address])])
            headers = {"X-API-Key": "sk-gateway", "Authorization": "Bearer sk-model"}
            assert (await http.post("/api/generate", json={"model": "ns/m"}, headers=headers)).status_code == 200
            (request,) = up.requests
            assert request["headers"][b"authorization"] == b"Bearer sk-model" and b"x-api-key" not in request["headers"]

    run(scenario)
