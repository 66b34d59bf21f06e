"""OpenAI tool calling through create_app with the fake engine: required and named calls constrained by the call
schema, auto calls parsed from the text, tool results in the history, streamed tool_calls deltas assembled by the
official client's own stream state, and the 400s that name the field."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletionChunk
from runtime_fast import MODEL, FastApp, serve, sse_events

from slm_runtime.engines.base import ModelInfo, SamplingParams
from slm_runtime.engines.fake import FakeEngine
from slm_runtime.errors import InvalidRequestError
from slm_runtime.tools.grammar import forced_call_schema
from slm_runtime.tools.types import ToolChoice, ToolFunction

PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather of a city", "parameters": PARAMETERS, "strict": True},
}
TIME = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL = {"name": "get_weather", "arguments": {"city": "Paris"}}


class ConstrainingFake(FakeEngine):
    """The fake engine, saying it can constrain output as llama.cpp does (it replies with its fixed text anyway,
    so the test chooses a reply the grammar allows); like llama.cpp's, its check refuses a schema it cannot turn
    into a grammar (here: one marked ``x-unconvertible``)."""

    @property
    def info(self) -> ModelInfo:
        return replace(super().info, supports_json_schema=True)

    def validate(self, params: SamplingParams) -> None:
        if "x-unconvertible" in json.dumps(params.json_schema):
            raise InvalidRequestError("cannot constrain output to this JSON schema", param="format")


CONTEXT = 4096  # the tools' description, byte by byte, fits


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": ASK, **fields}


def assembled(body: str, tools: list[dict[str, Any]]) -> Any:
    """The completion the official client's stream helpers build from an SSE body."""
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState(input_tools=tools)  # type: ignore[arg-type]
    for event in sse_events(body)[:-1]:
        state.handle_chunk(ChatCompletionChunk.model_validate(json.loads(event)))
    return state.get_final_completion()


def test_a_named_function_is_generated_under_its_call_schema_and_answered_as_a_tool_call() -> None:
    async def scenario(app: FastApp) -> None:
        choice = {"type": "function", "function": {"name": "get_weather"}}
        body = chat(tools=[WEATHER, TIME], tool_choice=choice, parallel_tool_calls=False)
        answer = (await app.client.post("/v1/chat/completions", json=body)).json()
        (result,) = answer["choices"]
        assert result["finish_reason"] == "tool_calls"
        message = result["message"]
        assert message["content"] is None
        (call,) = message["tool_calls"]
        assert call["id"].startswith("call_") and call["type"] == "function"
        assert call["function"]["name"] == "get_weather"
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
        tools = [ToolFunction("get_weather", "Weather of a city", PARAMETERS), ToolFunction("get_time", "", {})]
        forced = ToolChoice("function", function="get_weather", parallel=False)
        assert app.engine.started[-1].params.json_schema == forced_call_schema(tools, forced)

    serve(scenario, ConstrainingFake(reply=json.dumps(CALL), context_length=CONTEXT))


def test_required_calls_stream_as_deltas_the_official_client_assembles() -> None:
    async def scenario(app: FastApp) -> None:
        body = chat(tools=[WEATHER], tool_choice="required", stream=True)
        response = await app.client.post("/v1/chat/completions", json=body)
        chunks = [json.loads(e) for e in sse_events(response.text)[:-1]]
        deltas = [d for c in chunks for d in c["choices"][0]["delta"].get("tool_calls", [])]
        assert deltas[0]["id"].startswith("call_") and deltas[0]["function"]["name"] == "get_weather"
        assert all(set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} for d in deltas[1:])
        assert len(deltas) > 2  # the arguments stream in fragments
        completion = assembled(response.text, [WEATHER])
        (call,) = completion.choices[0].message.tool_calls
        assert (call.id, call.function.name) == (deltas[0]["id"], "get_weather")
        assert call.function.parsed_arguments == {"city": "Paris"}  # strict tools: the client parsed them
        assert completion.choices[0].finish_reason == "tool_calls"
        assert app.engine.started[-1].params.json_schema["type"] == "array"  # parallel calls by default

    serve(scenario, ConstrainingFake(reply=json.dumps([CALL]), context_length=CONTEXT))


def test_auto_answers_text_as_content_and_a_call_as_tool_calls() -> None:
    async def scenario(app: FastApp) -> None:
        answer = (await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER]))).json()
        (call,) = answer["choices"][0]["message"]["tool_calls"]
        assert json.loads(call["function"]["arguments"]) == {"city": "Paris"}
        assert app.engine.started[-1].params.json_schema is None  # the model decides: no grammar
        prompt = app.engine.detokenize(app.engine.started[-1].prompt)
        assert "get_weather" in prompt  # the template showed the tools
        streamed = await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER], stream=True))
        completion = assembled(streamed.text, [WEATHER])
        assert completion.choices[0].message.tool_calls[0].function.name == "get_weather"
        assert completion.choices[0].message.content in ("", None)

    serve(scenario, FakeEngine(reply=json.dumps({"tool_calls": [CALL]}), context_length=CONTEXT))


def test_auto_streams_plain_text_as_content_and_none_never_calls() -> None:
    async def scenario(app: FastApp) -> None:
        reply = app.engine.reply
        streamed = await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER], stream=True))
        contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in sse_events(streamed.text)[1:-2]]
        assert "".join(contents) == reply
        assert max(len(c) for c in contents) <= 2  # as it comes: only white space waits for the next token
        none = (await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="none"))).json()
        assert none["choices"][0]["message"] == {"role": "assistant", "content": reply}
        assert "get_weather" in app.engine.detokenize(app.engine.started[-1].prompt)  # still shown, as OpenAI's

    serve(scenario, FakeEngine(context_length=CONTEXT))


def test_a_tool_result_in_the_history_reaches_the_prompt_with_its_call() -> None:
    async def scenario(app: FastApp) -> None:
        call = {
            "id": "call_1",
            "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
        }
        messages = [
            *ASK,
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": "Sunny, 21 C"},
        ]
        body = {"model": MODEL, "messages": messages, "tools": [WEATHER]}
        answer = (await app.client.post("/v1/chat/completions", json=body)).json()
        assert answer["choices"][0]["finish_reason"] == "stop"
        prompt = app.engine.detokenize(app.engine.started[-1].prompt)
        assert "Sunny, 21 C" in prompt and "Oslo" in prompt

    serve(scenario, FakeEngine(context_length=CONTEXT))


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
        ({"tool_choice": "required"}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "tools[0].function.name"),
        ({"tools": [WEATHER, WEATHER]}, "tools[1].function.name"),
        ({"tools": [{"type": "custom", "function": {"name": "f"}}]}, "tools[0].type"),
        (
            {"tools": [WEATHER], "tool_choice": "required", "response_format": {"type": "json_object"}},
            "response_format",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        (
            {
                "messages": [
                    {"role": "assistant", "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{"}}]}
                ]
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"functions": [{"name": "f"}]}, "functions"),
        ({"function_call": "auto"}, "function_call"),
    ],
)
def test_tool_requests_that_cannot_work_are_400s_naming_the_field(fields: dict[str, Any], param: str) -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/v1/chat/completions", json=chat(**fields))
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param, response.json()

    serve(scenario, ConstrainingFake(context_length=CONTEXT))


def test_a_schema_the_engine_cannot_turn_into_a_grammar_names_the_tool_s_parameters() -> None:
    odd = {"type": "function", "function": {"name": "odd", "parameters": {"type": "object", "x-unconvertible": 1}}}

    async def scenario(app: FastApp) -> None:
        response = await app.client.post(
            "/v1/chat/completions", json=chat(tools=[WEATHER, odd], tool_choice="required")
        )
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "tools[1].function.parameters"
        auto = await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER, odd]))
        assert auto.status_code == 200  # only shown to the model: no grammar to build

    serve(scenario, ConstrainingFake(context_length=CONTEXT))


def test_an_engine_that_cannot_constrain_refuses_a_forced_call_naming_tool_choice() -> None:
    async def scenario(app: FastApp) -> None:
        response = await app.client.post("/v1/chat/completions", json=chat(tools=[WEATHER], tool_choice="required"))
        assert response.status_code == 400
        assert response.json()["error"]["param"] == "tool_choice"
        assert "engine cannot constrain" in response.json()["error"]["message"]

    serve(scenario, FakeEngine(context_length=CONTEXT))


def test_reasoning_is_split_into_reasoning_content_where_the_template_thinks() -> None:
    template = (  # Qwen 3's switch: the reply starts inside an opened reasoning block unless thinking is off
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{% if enable_thinking is defined and not enable_thinking %}<think></think>{% else %}<think>{% endif %}"
    )

    async def scenario(app: FastApp) -> None:
        answer = (await app.client.post("/v1/chat/completions", json=chat())).json()
        assert answer["choices"][0]["message"] == {
            "role": "assistant",
            "content": "Four.",
            "reasoning_content": "Let me see.",
        }
        streamed = await app.client.post("/v1/chat/completions", json=chat(stream=True))
        deltas = [json.loads(e)["choices"][0]["delta"] for e in sse_events(streamed.text)[:-1]]
        assert "".join(d.get("reasoning_content", "") for d in deltas) == "Let me see."
        assert "".join(d.get("content", "") for d in deltas) == "Four."
        off = (await app.client.post("/v1/chat/completions", json=chat(reasoning_effort="none"))).json()
        assert off["choices"][0]["message"] == {"role": "assistant", "content": app.engine.reply}
        assert app.engine.detokenize(app.engine.started[-1].prompt).endswith("<think></think>")
        bad = await app.client.post("/v1/chat/completions", json=chat(reasoning_effort="extreme"))
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "reasoning_effort"

    serve(scenario, FakeEngine(reply="Let me see.</think>\n\nFour.", chat_template=template, context_length=CONTEXT))
