"""Ollama TEMPLATEs with tools: Ollama's Go values (.Tools, .ToolCalls, .ToolName, .Thinking, $.Think,
$.IsThinkSet) printed as Go prints them, the Go forms real tool templates use (assignment inside range, ranges over
maps, continue), and Ollama's own expected renderings of its templates, byte for byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_runtime.prompts import ChatMessage, OllamaTemplate, TemplateError
from slm_runtime.tools.types import ToolCall, ToolFunction

FIXTURES = Path(__file__).parent.parent / "tools" / "fixtures"

# The tool and messages of Ollama's own TestTools (template/template_test.go).
OLLAMA_WEATHER = ToolFunction(
    "get_weather",
    "Get current weather information for a location",
    {
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {
                "type": "string",
                "enum": ["celsius", "fahrenheit"],
                "description": "The unit of temperature to use",
            },
        },
        "required": ["location"],
    },
)
OLLAMA_CASES = {
    "single": ([OLLAMA_WEATHER], []),
    "single-call": (
        [],
        [ChatMessage("assistant", "", tool_calls=(ToolCall("get_weather", {"location": "San Francisco, CA"}),))],
    ),
    "single-result": (
        [],
        [ChatMessage("tool", '{"temperature": 22, "condition": "Sunny", "humidity": 45, "wind_speed": 10}')],
    ),
}


def template(name: str) -> OllamaTemplate:
    return OllamaTemplate((FIXTURES / name).read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", ["command-r", "deepseek"])
@pytest.mark.parametrize("case", OLLAMA_CASES)
def test_ollamas_own_expected_renderings(name: str, case: str) -> None:
    tools, messages = OLLAMA_CASES[case]
    expected = (FIXTURES / "ollama-expected" / f"{name}-tools-{case}").read_text(encoding="utf-8")
    assert template(f"{name}.gotmpl").render_chat(messages, tools) == expected


def render(source: str, messages: list[ChatMessage], tools: list[ToolFunction], think: bool | str | None = None) -> str:
    """``source`` rendered as a chat template: as in Ollama, only a template that mentions .Messages gets the
    messages and tools (others are rendered per turn, with .Prompt and .Response)."""
    return OllamaTemplate("{{- if .Messages }}{{ end }}" + source).render_raw(messages, tools, think)


SEARCH = ToolFunction(
    "search",
    "Search <the web> & more",
    {"properties": {"q": {"description": "query", "type": "string"}}, "required": ["q"], "type": "object"},
)
CALL = ToolCall("search", {"q": "a<b", "n": 3, "exact": True}, id="call_0123456789abcdef01234567")
MESSAGES = [
    ChatMessage("user", "Find it"),
    ChatMessage("assistant", "", tool_calls=(CALL,), thinking="Search first."),
    ChatMessage("tool", "found", tool_name="search", tool_call_id=CALL.id),
]


def test_tools_print_as_go_json() -> None:
    """Ollama's tool types have String() methods that print compact JSON, fields in Go struct order, HTML-escaped."""
    function = (
        '{"name":"search","description":"Search \\u003cthe web\\u003e \\u0026 more","parameters":'
        '{"type":"object","required":["q"],"properties":{"q":{"type":"string","description":"query"}}}}'
    )
    assert render("{{ range .Tools }}{{ .Function }}{{ end }}", [], [SEARCH]) == function
    assert render("{{ range .Tools }}{{ json .Function }}{{ end }}", [], [SEARCH]) == function
    assert render("{{ range .Tools }}{{ . }}{{ end }}", [], [SEARCH]) == f'{{"type":"function","function":{function}}}'
    assert render("{{ .Tools }}", [], [SEARCH, SEARCH]) == f'[{{"type":"function","function":{function}}},' + (
        f'{{"type":"function","function":{function}}}]'
    )
    fields = (
        "{{ range .Tools }}{{ .Type }} {{ .Function.Name }}: {{ .Function.Description }} "
        "{{ .Function.Parameters.Required }}{{ end }}"
    )
    assert render(fields, [], [SEARCH]) == "function search: Search <the web> & more [q]"
    assert render("{{ if .Tools }}yes{{ else }}no{{ end }}{{ len .Tools }}", [], []) == "no0"


def test_messages_fields() -> None:
    source = (
        "{{ range .Messages }}{{ .Role }}:{{ .Content }}|{{ .Thinking }}|{{ .ToolName }}|"
        '{{ range .ToolCalls }}{{ .Function.Name }}{{ .Function.Arguments }}{{ index .Function.Arguments "n" }}'
        "{{ .Function.Arguments.exact }}{{ end }};{{ end }}"
    )
    assert render(source, MESSAGES, []) == (
        'user:Find it|||;assistant:|Search first.||search{"q":"a\\u003cb","n":3,"exact":true}3true;tool:found||search|;'
    )


def test_think_values() -> None:
    source = (
        "{{ if $.IsThinkSet }}set {{ if $.Think }}on{{ else }}off{{ end }}{{ else }}unset{{ end }} {{ .ThinkLevel }}"
    )
    assert render(source, [], []) == "unset "
    assert render(source, [], [], True) == "set on "
    assert render(source, [], [], False) == "set off "
    assert render(source, [], [], "high") == "set on high"


def test_assignment_inside_range_changes_the_outer_variable() -> None:
    """As in Go: the Qwen 3 template finds the last user message this way, and Gemma 3 270M's adds its system
    prompt to the first user turn only."""
    source = (
        '{{- $last := -1 }}{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $last = $i }}{{ end }}'
        "{{ end }}{{ $last }}"
    )
    assert render(source, [*MESSAGES, ChatMessage("user", "Again")], []) == "3"
    text = template("gemma3-270m.gotmpl").render_chat(
        [
            ChatMessage("system", "Be brief."),
            ChatMessage("user", "Hi"),
            ChatMessage("assistant", "Hello"),
            ChatMessage("user", "Bye"),
        ]
    )
    assert text == (
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n"
        "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n\n"
    )


def test_range_over_a_map_and_loop_controls() -> None:
    source = (
        "{{ range .Tools }}{{ range $name, $p := .Function.Parameters.Properties }}{{ $name }}={{ $p.Type }};"
        "{{ end }}{{ range .Function.Parameters.Properties }}{{ .Description }}{{ end }}{{ end }}"
        '{{ range .Messages }}{{ if eq .Role "assistant" }}{{ continue }}{{ end }}{{ if eq .Role "tool" }}'
        "{{ break }}{{ end }}{{ .Role }}{{ end }}"
    )
    assert render(source, MESSAGES, [SEARCH]) == "q=string;queryuser"
    with pytest.raises(TemplateError, match="break outside a range"):
        OllamaTemplate("{{ break }}")


def test_qwen3_ollama_template_thinks_as_asked() -> None:
    qwen3 = template("qwen3.gotmpl")
    question = [ChatMessage("user", "Hi")]
    assert qwen3.render_chat(question, think=True).endswith("Hi /think<|im_end|>\n<|im_start|>assistant\n")
    assert qwen3.render_chat(question, think=False).endswith(
        "Hi /no_think<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    assert qwen3.render_chat(question).endswith("Hi<|im_end|>\n<|im_start|>assistant\n")
    text = qwen3.render_chat(MESSAGES, [SEARCH], think=True)
    assert '<|im_start|>assistant\n<think>Search first.</think>\n<tool_call>\n{"name": "search", "arguments": ' in text
    assert "<|im_start|>user\n<tool_response>\nfound\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text


def test_llama32_ollama_template_lists_tools_in_the_last_user_message() -> None:
    text = template("llama3.2.gotmpl").render_chat([ChatMessage("user", "Find it")], [SEARCH])
    tool_line = '{"type":"function","function":{"name":"search",'
    assert "Do not use variables.\n\n" + tool_line in text
    assert text.endswith("\n\nFind it<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n")
