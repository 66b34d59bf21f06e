"""The tool-call parsers while a reply streams: plain text goes out at once, a marker split across pieces is held
back, calls come out at the end, and text that only looked like a call is returned as content, never lost. Also
the family each template's text selects, and each family's other shapes (replies from the models' documentation
and from real outputs that the templates do not render)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_runtime.tools.parsers import (
    FunctionGemmaParser,
    GemmaToolCodeParser,
    GenericParser,
    HermesParser,
    Llama3Parser,
    MistralParser,
    Phi4MiniParser,
    ToolCallParser,
    parser_for,
)
from slm_runtime.tools.types import ToolCall

FIXTURES = Path(__file__).parent / "fixtures"
PARSERS = [HermesParser, Phi4MiniParser, MistralParser, Llama3Parser, GemmaToolCodeParser, FunctionGemmaParser]
ALL_PARSERS = [*PARSERS, GenericParser]


def run(parser: ToolCallParser, text: str, step: int = 1) -> tuple[list[str], str, list[tuple[str, object]]]:
    """What each feed returned, the content left at the end, and the calls."""
    outputs = [parser.feed(text[i : i + step]) for i in range(0, len(text), step)]
    rest, calls = parser.finish()
    return outputs, rest, [(call.name, call.arguments) for call in calls]


def content_and_calls(parser: ToolCallParser, text: str, step: int = 1) -> tuple[str, list[tuple[str, object]]]:
    outputs, rest, calls = run(parser, text, step)
    return "".join(outputs) + rest, calls


@pytest.mark.parametrize(
    ("fixture", "family"),
    [
        ("qwen2.5-instruct.jinja", "hermes"),
        ("qwen2.5.gotmpl", "hermes"),
        ("qwen3.jinja", "hermes"),
        ("qwen3.gotmpl", "hermes"),
        ("llama-3.2-instruct.jinja", "llama3"),
        ("llama3.2.gotmpl", "llama3"),
        ("mistral-small-3.1-instruct.jinja", "mistral"),
        ("mistral-0.3.gotmpl", "mistral"),
        ("mistral-small-3.2.gotmpl", "mistral"),
        ("phi-4-mini-instruct.jinja", "phi4-mini"),
        ("phi4-mini.gotmpl", "phi4-mini"),
        ("gemma-3-it.jinja", "generic"),
        ("gemma3-270m.gotmpl", "generic"),
        ("deepseek-r1-distill-qwen.jinja", "generic"),
    ],
)
def test_the_family_is_read_from_the_template(fixture: str, family: str) -> None:
    assert parser_for((FIXTURES / fixture).read_text(encoding="utf-8")).family == family


def test_families_without_fixtures_and_plain_templates() -> None:
    function_gemma = "{{- '<start_function_declaration>' -}}{{- '<start_function_call>call:' + name + '{' -}}"
    assert parser_for(function_gemma).family == "functiongemma"
    assert parser_for("Call tools in a ```tool_code block: {{ tools }}").family == "gemma-tool-code"
    assert parser_for("").family == "generic"  # the default template
    assert parser_for("{{ if .System }}{{ .System }}{{ end }}{{ .Prompt }}").family == "generic"
    plain_llama = "<|start_header_id|>user<|end_header_id|>\n\n{{ .Prompt }}<|eot_id|>"
    assert parser_for(plain_llama).family == "generic"  # Llama 3 without tools


@pytest.mark.parametrize("parser_class", ALL_PARSERS)
def test_plain_text_streams_out_without_waiting(parser_class: type[ToolCallParser]) -> None:
    text = "The weather in Paris is mild today, about 18 degrees."
    outputs, rest, calls = run(parser_class(), text)
    assert calls == []
    assert "".join(outputs) + rest == text
    # Everything fed has gone out by each character that is not white space (white space waits for the next word:
    # it might be the line break before a call).
    for index, char in enumerate(text):
        if not char.isspace():
            assert "".join(outputs[: index + 1]) == text[: index + 1]


@pytest.mark.parametrize(
    ("parser_class", "marker"),
    [
        (HermesParser, "<tool_call>"),
        (Phi4MiniParser, "<|tool_call|>"),
        (MistralParser, "[TOOL_CALLS]"),
        (Llama3Parser, "<|python_tag|>"),
        (GemmaToolCodeParser, "```tool_code"),
        (FunctionGemmaParser, "<start_function_call>"),
    ],
)
def test_a_marker_split_across_pieces_is_held_back(parser_class: type[ToolCallParser], marker: str) -> None:
    parser = parser_class()
    assert parser.feed("Checking") == "Checking"
    assert parser.feed(" now." + marker[:3]) == " now."
    assert parser.feed(marker[3:-1]) == ""
    assert parser.feed(marker[-1] + "garbage that is not a call") == ""
    rest, calls = parser.finish()
    assert calls == []
    assert rest == marker + "garbage that is not a call"  # held, then returned: never lost


@pytest.mark.parametrize("parser_class", PARSERS)
def test_a_text_that_only_begins_like_a_marker_is_released(parser_class: type[ToolCallParser]) -> None:
    marker = parser_class.anywhere[0]
    text = f"Compare {marker[:-1]}x and go on."
    assert content_and_calls(parser_class(), text) == (text, [])


@pytest.mark.parametrize("parser_class", ALL_PARSERS)
def test_every_family_reads_the_generic_shape_at_the_start(parser_class: type[ToolCallParser]) -> None:
    text = '\n{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}], "content": "One moment."}'
    assert content_and_calls(parser_class(), text) == ("One moment.", [("get_weather", {"city": "Paris"})])
    fenced = '```json\n[{"name": "get_time", "arguments": {}}]\n```'
    assert content_and_calls(parser_class(), fenced, step=3) == ("", [("get_time", {})])


@pytest.mark.parametrize("parser_class", ALL_PARSERS)
def test_json_that_is_not_a_call_is_content(parser_class: type[ToolCallParser]) -> None:
    for text in ['{"name": "Alice", "age": 30}', "[1, 2, 3] are numbers", '{"tool_calls": "soon"}', "{broken"]:
        assert content_and_calls(parser_class(), text) == (text, [])


def test_hermes_shapes() -> None:
    text = (
        "I'll check both.\n<tool_call>\n"
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Oslo\\"}"}\n'  # arguments as a JSON string
        "</tool_call>\n<tool_call>\n"
        "<function=get_time>\n<parameter=zone>\nCET\n</parameter>\n<parameter=hours>\n24\n</parameter>\n</function>\n"
        "</tool_call>\n<tool_call>\nnot json\n</tool_call>"
    )
    assert content_and_calls(HermesParser(), text) == (
        "I'll check both.<tool_call>\nnot json\n</tool_call>",
        [("get_weather", {"city": "Oslo"}), ("get_time", {"zone": "CET", "hours": 24})],
    )
    # The reply may end before the closing tag (a stop sequence, or the token limit).
    cut = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"'
    assert content_and_calls(HermesParser(), cut) == ("", [("get_weather", {"city": "Oslo"})])


def test_mistral_shapes() -> None:
    listed = '[TOOL_CALLS] [{"name": "a", "arguments": {"x": 1}, "id": "abcdefghi"}, {"name": "b", "arguments": {}}]'
    assert content_and_calls(MistralParser(), listed, 4) == ("", [("a", {"x": 1}), ("b", {})])
    named = '[TOOL_CALLS]a[ARGS]{"x": [1, 2]}[TOOL_CALLS]b[CALL_ID]ab12cd34e[ARGS]{}'
    assert content_and_calls(MistralParser(), named) == ("", [("a", {"x": [1, 2]}), ("b", {})])
    assert content_and_calls(MistralParser(), "Sure.[TOOL_CALLS]not a call") == ("Sure.[TOOL_CALLS]not a call", [])


def test_llama3_shapes() -> None:
    assert content_and_calls(
        Llama3Parser(), '{"name": "a", "parameters": {"x": 1}}; {"name": "b", "parameters": {}}'
    ) == (
        "",
        [("a", {"x": 1}), ("b", {})],
    )
    assert content_and_calls(Llama3Parser(), '<|python_tag|>{"name": "a", "parameters": {"q": "x"}}') == (
        "",
        [("a", {"q": "x"})],
    )
    # Llama 3.1's built-in tools are called in Python after <|python_tag|>.
    assert content_and_calls(Llama3Parser(), 'Searching.<|python_tag|>brave_search.call(query="Paris weather")') == (
        "Searching.",
        [("brave_search", {"query": "Paris weather"})],
    )
    # A brace later in the reply is not a call.
    text = 'The set {"name": "a", "parameters": {}} is an example.'
    assert content_and_calls(Llama3Parser(), text) == (text, [])


def test_phi4_mini_shapes() -> None:
    text = (
        '<|tool_call|>[{"type": "function", "function": {"name": "a", "arguments": {"x": 1}}}, '
        '{"name": "b", "arguments": {}}]<|/tool_call|>'
    )
    assert content_and_calls(Phi4MiniParser(), text) == ("", [("a", {"x": 1}), ("b", {})])
    # The closing tag may be missing; Ollama's template drops a call's closing brace.
    assert content_and_calls(Phi4MiniParser(), '<|tool_call|>[{"name":"a","arguments":{"x":1}]') == (
        "",
        [("a", {"x": 1})],
    )


def test_gemma_python_calls() -> None:
    # Google's Gemma 3 function-calling guide: a Python list of calls as the whole reply.
    guide = '[get_product_name_by_PID(PID="807ZPKBL9V")]'
    assert content_and_calls(GemmaToolCodeParser(), guide) == ("", [("get_product_name_by_PID", {"PID": "807ZPKBL9V"})])
    block = (
        "Let me check.\n```tool_code\nprint(get_weather(city='Paris', days=-2, exact=true, tags=['a', None]))\n"
        'get_time(zone="CET")\n```\nDone.'
    )
    assert content_and_calls(GemmaToolCodeParser(), block) == (
        "Let me check.Done.",
        [
            ("get_weather", {"city": "Paris", "days": -2, "exact": True, "tags": ["a", None]}),
            ("get_time", {"zone": "CET"}),
        ],
    )
    # Positional arguments cannot be named without the schema: not a call.
    assert content_and_calls(GemmaToolCodeParser(), "```tool_code\nget_weather('Paris')\n```") == (
        "```tool_code\nget_weather('Paris')\n```",
        [],
    )


def test_function_gemma_calls() -> None:
    # The documented FunctionGemma replies (Google's formatting guide), including a parallel call.
    text = (
        "<start_function_call>call:get_current_weather{location:<escape>Tokyo, Japan<escape>}<end_function_call>"
        "<start_function_call>call:get_stock_price{symbol:<escape>GOOG<escape>,limits:{low:1.5,high:200},"
        "days:[<escape>mon<escape>,<escape>tue, {wed}<escape>],live:true,note:null}<end_function_call>"
    )
    expected = [
        ("get_current_weather", {"location": "Tokyo, Japan"}),
        (
            "get_stock_price",
            {
                "symbol": "GOOG",
                "limits": {"low": 1.5, "high": 200},
                "days": ["mon", "tue, {wed}"],
                "live": True,
                "note": None,
            },
        ),
    ]
    for step in (1, 5, len(text)):
        assert content_and_calls(FunctionGemmaParser(), text, step) == ("", expected)
    broken = "<start_function_call>call:get_weather{location:<escape>Tokyo}<end_function_call>"
    assert content_and_calls(FunctionGemmaParser(), broken) == (broken, [])


def test_generic_parser_reads_only_a_reply_that_opens_with_the_call() -> None:
    assert content_and_calls(GenericParser(), '{"tool_call": {"name": "a", "arguments": {}}}') == ("", [("a", {})])
    text = 'Here is JSON: {"tool_calls": [{"name": "a", "arguments": {}}]}'
    assert content_and_calls(GenericParser(), text) == (text, [])
    # Text after the JSON is kept.
    assert content_and_calls(GenericParser(), '{"name": "a", "arguments": {}}\nThat is all.') == (
        "That is all.",
        [("a", {})],
    )


def test_every_call_gets_its_own_id() -> None:
    parser = HermesParser()
    parser.feed(
        '<tool_call>{"name": "a", "arguments": {}}</tool_call><tool_call>{"name": "a", "arguments": {}}</tool_call>'
    )
    _, calls = parser.finish()
    assert len({call.id for call in calls}) == 2
    assert all(isinstance(call, ToolCall) and call.id.startswith("call_") for call in calls)
