"""Tool calling with the official `openai` and `ollama` clients against the live server on the real Gemma 3 270M.

A 270M base model is no judge of when to call a tool: what is asserted is structure and validity. Required and named
calls are generated under the call schema, so their arguments always parse and validate against the function's
schema (checked here with jsonschema), streamed or not; a full round trip (call, tool result, final answer) runs
through both clients.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import ollama
import openai
import pytest
from pydantic import BaseModel, Field
from runtime_e2e import API_KEY, MODEL_NAME, LiveServer, make_settings

pytestmark = pytest.mark.model

WEATHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
WEATHER = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Weather forecast of a city", "parameters": WEATHER_SCHEMA},
}
TIME_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 20}},
    "required": ["zone"],
    "additionalProperties": False,
}
TIME = {
    "type": "function",
    "function": {"name": "get_time", "description": "Time in a zone", "parameters": TIME_SCHEMA},
}
SCHEMAS = {"get_weather": WEATHER_SCHEMA, "get_time": TIME_SCHEMA}
ASK = [{"role": "user", "content": "What will the weather be in Paris for the next 3 days?"}]
SHORT: dict[str, Any] = {"temperature": 0, "seed": 3, "max_tokens": 120}


class Forecast(BaseModel):
    """Weather forecast of a city (a strict tool the client's stream helpers parse)."""

    city: str = Field(max_length=40)
    days: int


@pytest.fixture
def client(live_server: LiveServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=live_server.url + "/v1", api_key=API_KEY, max_retries=0)


@pytest.fixture
def ollama_client(live_server: LiveServer) -> ollama.Client:
    return ollama.Client(host=live_server.url, headers={"Authorization": f"Bearer {API_KEY}"})


def valid_call(name: str, arguments: str) -> dict[str, Any]:
    """The arguments of a call, checked against its function's schema."""
    parsed = json.loads(arguments)
    jsonschema.validate(parsed, SCHEMAS[name])
    return parsed  # type: ignore[no-any-return]


def test_required_calls_validate_against_the_schema(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", **SHORT
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls
    for call in choice.message.tool_calls:
        assert call.id.startswith("call_") and call.type == "function"
        valid_call(call.function.name, call.function.arguments)


def test_a_named_function_is_the_one_called(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model=MODEL_NAME,
        messages=ASK,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
        parallel_tool_calls=False,
        **SHORT,
    )
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "get_time"
    assert set(valid_call("get_time", call.function.arguments)) == {"zone"}


def test_a_streamed_named_call_is_assembled_by_the_client_s_stream_helper(client: openai.OpenAI) -> None:
    tool = openai.pydantic_function_tool(Forecast, name="forecast")
    with client.chat.completions.stream(
        model=MODEL_NAME,
        messages=ASK,
        tools=[tool],
        tool_choice={"type": "function", "function": {"name": "forecast"}},
        parallel_tool_calls=False,
        **SHORT,
    ) as stream:
        events = [event.type for event in stream]
        completion = stream.get_final_completion()
    (call,) = completion.choices[0].message.tool_calls or []
    assert call.function.name == "forecast"
    assert isinstance(call.function.parsed_arguments, Forecast)  # parsed and validated by the client
    assert "tool_calls.function.arguments.delta" in events and "tool_calls.function.arguments.done" in events
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])


def test_streamed_required_calls_equal_the_whole_answer(client: openai.OpenAI) -> None:
    kwargs: dict[str, Any] = {"model": MODEL_NAME, "messages": ASK, "tools": [WEATHER], "tool_choice": "required"}
    whole = client.chat.completions.create(**kwargs, **SHORT).choices[0].message.tool_calls or []
    fragments: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in client.chat.completions.create(**kwargs, **SHORT, stream=True):
        for delta in chunk.choices[0].delta.tool_calls or []:
            call = fragments.setdefault(delta.index, {"name": "", "arguments": ""})
            if delta.function and delta.function.name:
                call["name"] = delta.function.name
            call["arguments"] += (delta.function.arguments or "") if delta.function else ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    streamed = [(c["name"], valid_call(c["name"], c["arguments"])) for _, c in sorted(fragments.items())]
    assert streamed == [(c.function.name, json.loads(c.function.arguments)) for c in whole]


def test_a_round_trip_runs_from_the_call_to_the_final_answer(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, tools=[WEATHER], tool_choice="required", parallel_tool_calls=False, **SHORT
    )
    message = first.choices[0].message
    (call,) = message.tool_calls or []
    arguments = valid_call("get_weather", call.function.arguments)
    history: list[Any] = [
        *ASK,
        message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"forecast": "sunny", **arguments})},
    ]
    final = client.chat.completions.create(
        model=MODEL_NAME, messages=history, tools=[WEATHER], tool_choice="none", max_tokens=32, temperature=0
    )
    answer = final.choices[0]
    assert answer.finish_reason in {"stop", "length"}
    assert answer.message.tool_calls is None and isinstance(answer.message.content, str)
    assert final.usage and final.usage.prompt_tokens > first.usage.prompt_tokens  # type: ignore[union-attr]


def test_auto_answers_either_text_or_valid_calls(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=[WEATHER], **SHORT)
    choice = completion.choices[0]
    if choice.message.tool_calls:
        assert choice.finish_reason == "tool_calls"
        for call in choice.message.tool_calls:
            assert call.function.name == "get_weather" and isinstance(json.loads(call.function.arguments), dict)
    else:
        assert choice.finish_reason in {"stop", "length"} and choice.message.content is not None


def test_a_schema_llama_cpp_cannot_turn_into_a_grammar_is_a_400_naming_it(client: openai.OpenAI) -> None:
    empty = {"type": "function", "function": {"name": "never", "parameters": {"type": "object", "properties": {
        "x": {"enum": []}}, "required": ["x"]}}}  # fmt: skip
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model=MODEL_NAME, messages=ASK, tools=[WEATHER, empty], tool_choice="required")
    assert refused.value.param == "tools[1].function.parameters"


def test_ollama_tools_stream_and_not_in_ollama_s_shapes(ollama_client: ollama.Client) -> None:
    # One earlier exchange shows the model a call (greedy decoding of this model then imitates it, so the call
    # path runs; what is asserted holds whether it calls or not).
    earlier = {"function": {"name": "get_weather", "arguments": {"city": "Rome", "unit": "celsius", "days": 2}}}
    messages = [
        {"role": "user", "content": "Weather in Rome for 2 days?"},
        {"role": "assistant", "content": "", "tool_calls": [earlier]},
        {"role": "tool", "tool_name": "get_weather", "content": "sunny"},
        {"role": "assistant", "content": "It will be sunny in Rome."},
        *ASK,
    ]
    options = {"temperature": 0, "num_predict": 60}
    whole = ollama_client.chat(model=MODEL_NAME, messages=messages, tools=[WEATHER], options=options)
    chunks = list(
        ollama_client.chat(model=MODEL_NAME, messages=messages, tools=[WEATHER], options=options, stream=True)
    )
    assert chunks[-1].done and whole.done
    streamed_calls = [call for chunk in chunks for call in chunk.message.tool_calls or []]
    assert [(c.function.name, dict(c.function.arguments)) for c in streamed_calls] == [
        (c.function.name, dict(c.function.arguments)) for c in whole.message.tool_calls or []
    ]
    assert all(not c.done for c in chunks if c.message.tool_calls)  # calls come in a chunk before the last
    assert "".join(c.message.content or "" for c in chunks) == whole.message.content
    for call in whole.message.tool_calls or []:
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)


def test_ollama_round_trip_with_a_tool_result(ollama_client: ollama.Client) -> None:
    call = {"function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3}}}
    messages = [
        *ASK,
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "get_weather", "content": '{"forecast": "sunny, 24 C"}'},
    ]
    options = {"temperature": 0, "num_predict": 24}
    response = ollama_client.chat(model=MODEL_NAME, messages=messages, tools=[WEATHER], options=options)
    assert response.done and response.message.role == "assistant"
    assert response.prompt_eval_count and response.prompt_eval_count > 20


@pytest.fixture(scope="module")
def onnx_client() -> Iterator[openai.OpenAI]:
    """The same model on the onnxruntime-genai engine (built once by hack/build_onnx_model.py, cached)."""
    from slm_runtime.engines import load_engine

    build = Path(__file__).resolve().parents[3] / "hack" / "build_onnx_model.py"
    built = subprocess.run([sys.executable, str(build)], check=True, stdout=subprocess.PIPE, text=True, timeout=3600)
    server = LiveServer(make_settings(Path(built.stdout.strip().splitlines()[-1]), model_digest=None), load_engine)
    server.start()
    yield openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)
    server.stop()


def test_onnx_required_calls_go_through_guidance_and_validate(onnx_client: openai.OpenAI) -> None:
    completion = onnx_client.chat.completions.create(
        model=MODEL_NAME, messages=ASK, tools=[WEATHER, TIME], tool_choice="required", **SHORT
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    for call in choice.message.tool_calls:
        valid_call(call.function.name, call.function.arguments)
    streamed = onnx_client.chat.completions.create(
        model=MODEL_NAME,
        messages=ASK,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        stream=True,
        **SHORT,
    )
    pieces = [d for chunk in streamed if chunk.choices for d in chunk.choices[0].delta.tool_calls or []]
    assert {d.index for d in pieces} == {0} and pieces[0].function and pieces[0].function.name == "get_weather"
    valid_call("get_weather", "".join((d.function.arguments or "") if d.function else "" for d in pieces))
