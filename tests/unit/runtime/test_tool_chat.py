"""A chat's output read as it streams (slm_runtime.tool_chat): a forced call streamed as its JSON grows, calls
parsed in auto mode, thinking split out, and the checks of a request's tools."""

from __future__ import annotations

import json

import pytest

from slm_runtime.answers import Answer, CallDelta, Delta
from slm_runtime.errors import InvalidRequestError
from slm_runtime.generation import GenerationDone
from slm_runtime.prompts.thinking import ThinkingSplitter
from slm_runtime.tool_chat import ChatShaper, ToolRequest, check_tools, forced_schema
from slm_runtime.tools.parsers import GenericParser
from slm_runtime.tools.types import ToolChoice, ToolFunction

WEATHER = ToolFunction(
    "get_weather",
    "The weather in a city",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = ToolFunction("get_time", "The time", {"type": "object", "properties": {"zone": {"type": "string"}}})


def done(reason: str = "stop") -> GenerationDone:
    return GenerationDone(reason, 10, 5, 1, 1, 1)  # type: ignore[arg-type]


def pieces(text: str, size: int = 3) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def run(shaper: ChatShaper, text: str, reason: str = "stop") -> tuple[list[Delta], Answer]:
    deltas = [shaper.feed(piece) for piece in pieces(text)]
    tail, answer = shaper.finish(done(reason))
    return [d for d in [*deltas, tail] if d], answer


def joined_calls(deltas: list[Delta]) -> dict[int, dict[str, str]]:
    """What a client assembles from the call deltas: per index, id, name and the arguments' text."""
    calls: dict[int, dict[str, str]] = {}
    for delta in deltas:
        for piece in delta.calls:
            call = calls.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
            if piece.name:
                assert not call["name"], "a call's name is sent once"
                call.update(id=piece.id, name=piece.name)
            call["arguments"] += piece.arguments
    return calls


def test_a_forced_call_streams_its_name_then_its_arguments_as_they_grow() -> None:
    request = ToolRequest((WEATHER, TIME), ToolChoice("function", function="get_weather", parallel=False))
    text = json.dumps({"name": "get_weather", "arguments": {"city": 'Paris, "FR" {x}'}})
    deltas, answer = run(ChatShaper(request), text)
    assert all(not d.content for d in deltas)
    (call,) = answer.calls
    assert joined_calls(deltas) == {0: {"id": call.id, "name": "get_weather", "arguments": json.dumps(call.arguments)}}
    assert len([d for d in deltas if d.calls]) > 2  # the arguments came in several fragments
    assert call.arguments == {"city": 'Paris, "FR" {x}'} and call.id.startswith("call_")
    assert (answer.content, answer.finish_reason) == ("", "tool_calls")


def test_parallel_forced_calls_each_get_an_index_and_an_id() -> None:
    request = ToolRequest((WEATHER, TIME), ToolChoice("required", parallel=True))
    text = json.dumps(
        [{"name": "get_weather", "arguments": {"city": "Oslo"}}, {"name": "get_time", "arguments": {"zone": "CET"}}]
    )
    deltas, answer = run(ChatShaper(request), text)
    assembled = joined_calls(deltas)
    assert [c.name for c in answer.calls] == ["get_weather", "get_time"]
    assert [assembled[i]["id"] for i in (0, 1)] == [c.id for c in answer.calls]
    assert [json.loads(assembled[i]["arguments"]) for i in (0, 1)] == [{"city": "Oslo"}, {"zone": "CET"}]


def test_a_forced_call_cut_short_is_returned_as_text_with_its_finish_reason() -> None:
    request = ToolRequest((WEATHER,), ToolChoice("required", parallel=False))
    _, answer = run(ChatShaper(request), '{"name": "get_weather", "arguments": {"ci', reason="length")
    assert (answer.calls, answer.finish_reason) == ((), "length")
    assert answer.content.startswith('{"name"')


def test_auto_streams_plain_text_and_finds_a_call_at_the_end() -> None:
    request = ToolRequest((WEATHER,), ToolChoice("auto"))
    deltas, answer = run(ChatShaper(request, parser=GenericParser()), "It is sunny today.")
    assert "".join(d.content for d in deltas) == "It is sunny today." == answer.content
    assert (answer.calls, answer.finish_reason) == ((), "stop")
    call_text = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {"city": "Rome"}}]})
    deltas, answer = run(ChatShaper(request, parser=GenericParser()), call_text)
    assert "".join(d.content for d in deltas) == "" == answer.content
    (call,) = answer.calls
    assert (call.name, call.arguments, answer.finish_reason) == ("get_weather", {"city": "Rome"}, "tool_calls")
    assert joined_calls(deltas) == {0: {"id": call.id, "name": "get_weather", "arguments": '{"city": "Rome"}'}}


def test_auto_without_parallel_calls_keeps_the_first() -> None:
    request = ToolRequest((WEATHER,), ToolChoice("auto", parallel=False))
    calls = [{"name": "get_weather", "arguments": {"city": c}} for c in ("A", "B")]
    _, answer = run(ChatShaper(request, parser=GenericParser()), json.dumps({"tool_calls": calls}))
    assert [c.arguments for c in answer.calls] == [{"city": "A"}]


def test_choice_none_leaves_call_shaped_text_as_content() -> None:
    request = ToolRequest((WEATHER,), ToolChoice("none"))
    text = json.dumps({"tool_calls": [{"name": "get_weather", "arguments": {}}]})
    _, answer = run(ChatShaper(request, parser=GenericParser()), text)
    assert (answer.content, answer.calls) == (text, ())


def test_thinking_is_split_out_before_the_content() -> None:
    shaper = ChatShaper(ToolRequest(), thinking=ThinkingSplitter(("<think>", "</think>")))
    deltas, answer = run(shaper, "<think>Let me see.</think>\n\nFour.")
    assert "".join(d.thinking for d in deltas) == "Let me see." == answer.thinking
    assert "".join(d.content for d in deltas) == "Four." == answer.content


def test_an_unclosed_thought_is_thinking_when_the_reply_is_cut() -> None:
    shaper = ChatShaper(ToolRequest(), thinking=ThinkingSplitter(("<think>", "</think>")))
    _, answer = run(shaper, "<think>Hmm, maybe", reason="length")
    assert (answer.thinking, answer.content) == ("Hmm, maybe", "")


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (ToolRequest((WEATHER, WEATHER), ToolChoice("auto")), "tools[1].function.name"),
        (ToolRequest((ToolFunction("f", "", {"type": "string"}),), ToolChoice("auto")), "tools[0].function.parameters"),
        (ToolRequest((), ToolChoice("required")), "tool_choice"),
        (ToolRequest((WEATHER,), ToolChoice("function", function="nope")), "tool_choice"),
    ],
)
def test_tools_that_cannot_work_are_refused_naming_the_field(request_: ToolRequest, param: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        check_tools(request_)
    assert caught.value.param == param


def test_only_required_and_named_choices_constrain_the_generation() -> None:
    assert forced_schema(ToolRequest((WEATHER,), ToolChoice("auto"))) is None
    assert forced_schema(ToolRequest((WEATHER,), ToolChoice("none"))) is None
    named = forced_schema(ToolRequest((WEATHER, TIME), ToolChoice("function", function="get_time", parallel=False)))
    assert named is not None and named["properties"]["name"] == {"const": "get_time"}


def test_call_deltas_start_with_the_id_and_name() -> None:
    request = ToolRequest((WEATHER,), ToolChoice("required", parallel=False))
    shaper = ChatShaper(request)
    assert shaper.feed('{"name": "get_wea') == Delta()
    first = shaper.feed('ther", "arguments": {')
    assert first.calls[0] == CallDelta(0, id=first.calls[0].id, name="get_weather")
    assert first.calls[1:] == (CallDelta(0, arguments="{"),)
