"""Ollama's /api/chat with tools, thinking and keep_alive, through create_app with the fake engine: tool calls as
objects (whole in one streamed chunk, as Ollama sends them), tool results by tool_name, Ollama's 400 for think on
a template that does not think, and a model that keep_alive unloads and the next request loads again."""

from __future__ import annotations

import json
from typing import Any

from runtime_fast import MODEL, FastApp, serve, wait_for

from slm_runtime.engines.fake import FakeEngine
from slm_runtime.settings import RuntimeSettings

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
CALL_REPLY = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]})
ASK = [{"role": "user", "content": "Weather in Paris?"}]


CONTEXT = 4096  # the tools' description, byte by byte, fits


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line]


def test_a_tool_call_comes_back_with_its_arguments_as_an_object() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "messages": ASK, "tools": [TOOL], "stream": False}
        answer = (await app.client.post("/api/chat", json=body)).json()
        message = answer["message"]
        assert (message["role"], message["content"], answer["done_reason"]) == ("assistant", "", "stop")
        (call,) = message["tool_calls"]
        assert call["function"] == {"index": 0, "name": "get_weather", "arguments": {"city": "Paris"}}
        assert "get_weather" in app.engine.detokenize(app.engine.started[-1].prompt)

    serve(scenario, FakeEngine(reply=CALL_REPLY, context_length=CONTEXT))


def test_streamed_tool_calls_arrive_whole_in_one_chunk_before_the_final_one() -> None:
    async def scenario(app: FastApp) -> None:
        chunks = lines(
            (await app.client.post("/api/chat", json={"model": MODEL, "messages": ASK, "tools": [TOOL]})).text
        )
        with_calls = [c for c in chunks if c["message"].get("tool_calls")]
        assert len(with_calls) == 1 and with_calls[0]["done"] is False
        assert with_calls[0]["message"]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
        assert "".join(c["message"]["content"] for c in chunks) == ""
        assert chunks[-1]["done"] is True and chunks[-2] is with_calls[0]

    serve(scenario, FakeEngine(reply=CALL_REPLY, context_length=CONTEXT))


def test_plain_text_with_tools_streams_as_it_comes() -> None:
    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "messages": ASK, "tools": [TOOL]}
        chunks = lines((await app.client.post("/api/chat", json=body)).text)
        contents = [c["message"]["content"] for c in chunks[:-1]]
        assert "".join(contents) == app.engine.reply
        assert max(len(c) for c in contents) <= 2  # as it comes: only white space waits for the next token
        assert not any("tool_calls" in c["message"] for c in chunks)

    serve(scenario, FakeEngine(context_length=CONTEXT))


def test_a_tool_result_reaches_the_prompt_with_the_call_it_answers() -> None:
    async def scenario(app: FastApp) -> None:
        call = {"function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
        messages = [
            *ASK,
            {"role": "assistant", "content": "", "tool_calls": [call]},
            {"role": "tool", "tool_name": "get_weather", "content": "Sunny, 21 C"},
        ]
        body = {"model": MODEL, "messages": messages, "tools": [TOOL], "stream": False}
        answer = (await app.client.post("/api/chat", json=body)).json()
        assert answer["message"]["content"] == app.engine.reply
        prompt = app.engine.detokenize(app.engine.started[-1].prompt)
        assert "Sunny, 21 C" in prompt and "Oslo" in prompt

    serve(scenario, FakeEngine(context_length=CONTEXT))


def test_think_on_a_template_that_does_not_think_is_ollama_s_400() -> None:
    async def scenario(app: FastApp) -> None:
        for path, body in (
            ("/api/chat", {"model": MODEL, "messages": ASK, "think": True}),
            ("/api/generate", {"model": MODEL, "prompt": "Hi", "think": "high"}),
        ):
            response = await app.client.post(path, json=body)
            assert (response.status_code, response.json()) == (400, {"error": f'"{MODEL}" does not support thinking'})
        off = await app.client.post(
            "/api/chat", json={"model": MODEL, "messages": ASK, "think": False, "stream": False}
        )
        assert off.status_code == 200 and "thinking" not in off.json()["message"]

    serve(scenario, FakeEngine(context_length=CONTEXT))


def test_a_thinking_template_splits_the_reasoning_into_thinking() -> None:
    template = (  # Qwen 3's switch: the reply starts inside an opened reasoning block unless thinking is off
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% else %}<think>{% endif %}"
    )

    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "messages": ASK, "stream": False}
        answer = (await app.client.post("/api/chat", json=body)).json()
        assert answer["message"]["thinking"] == "Let me see."
        assert answer["message"]["content"] == "Four."
        chunks = lines((await app.client.post("/api/chat", json={**body, "stream": True})).text)
        assert "".join(c["message"].get("thinking", "") for c in chunks) == "Let me see."
        assert "".join(c["message"]["content"] for c in chunks) == "Four."
        show = (await app.client.post("/api/show", json={"model": MODEL})).json()
        assert "thinking" in show["capabilities"]
        off = (await app.client.post("/api/chat", json={**body, "think": False})).json()["message"]
        assert "thinking" not in off and off["content"] == app.engine.reply  # not split: the model was told not to
        assert app.engine.detokenize(app.engine.started[-1].prompt).endswith("<think></think>")

    serve(scenario, FakeEngine(reply="Let me see.</think>\n\nFour.", chat_template=template, context_length=CONTEXT))


def test_keep_alive_zero_unloads_after_the_request_and_the_next_one_loads_again() -> None:
    engines: list[FakeEngine] = []

    def loader(_: RuntimeSettings) -> FakeEngine:
        engines.append(FakeEngine(context_length=CONTEXT))
        return engines[-1]

    async def scenario(app: FastApp) -> None:
        body = {"model": MODEL, "messages": ASK, "stream": False, "keep_alive": 0}
        assert (await app.client.post("/api/chat", json=body)).status_code == 200
        await wait_for(lambda: not app.service.loaded, "the model to be unloaded")
        assert (await app.client.get("/api/ps")).json() == {"models": []}
        assert [m["name"] for m in (await app.client.get("/api/tags")).json()["models"]] == [f"{MODEL}:latest"]
        assert (await app.client.get("/readyz")).status_code == 200  # it loads again on demand
        again = await app.client.post("/api/generate", json={"model": MODEL, "prompt": "Hi", "stream": False})
        assert again.json()["response"] == engines[-1].reply and len(engines) == 2
        (model,) = (await app.client.get("/api/ps")).json()["models"]
        assert model["expires_at"] > "2100"  # no keep_alive: it stays
        five = {"model": MODEL, "prompt": "Hi", "stream": False, "keep_alive": "5m"}
        assert (await app.client.post("/api/generate", json=five)).status_code == 200
        (model,) = (await app.client.get("/api/ps")).json()["models"]
        assert model["expires_at"] < "2100"
        unload = (await app.client.post("/api/generate", json={"model": MODEL, "keep_alive": 0})).json()
        assert (unload["done"], unload["done_reason"]) == (True, "unload")
        await wait_for(lambda: not app.service.loaded, "the model to be unloaded")
        assert len(engines) == 2

    serve(scenario, loader=loader)


def test_a_bad_keep_alive_is_a_400() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/api/chat", json={"model": MODEL, "messages": ASK, "keep_alive": "soon"})
        assert response.status_code == 400 and "keep_alive" in response.json()["error"]

    serve(scenario, FakeEngine(context_length=CONTEXT))
