"""Tools, tool calls, tool results and reasoning in the prompt: Hugging Face's template variables, the capabilities
found by probing each real template (tests/unit/runtime/tools/fixtures), and the polyfills for what a template
lacks, on Gemma 3's template (which has no tools and merges the system message into the first user turn)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slm_runtime.prompts import (
    ChatMessage,
    DefaultTemplate,
    JinjaChatTemplate,
    OllamaTemplate,
    PromptBuilder,
    PromptTemplate,
    TemplateCapabilities,
)
from slm_runtime.settings import ModelSettings
from slm_runtime.tools.types import ToolCall, ToolFunction

FIXTURES = Path(__file__).parent.parent / "tools" / "fixtures"

WEATHER = ToolFunction(
    "get_weather",
    "The weather <now>",
    {"type": "object", "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}}, "required": ["city"]},
)
CALL = ToolCall("get_weather", {"city": "Paris", "unit": "c"}, id="call_00112233445566778899aabb")
CHAT = [
    ChatMessage("system", "Be brief."),
    ChatMessage("user", "Weather in Paris?"),
    ChatMessage("assistant", "", tool_calls=(CALL,), thinking="Use the tool."),
    ChatMessage("tool", "18C", tool_name="get_weather", tool_call_id=CALL.id),
    ChatMessage("tool", "sunny", tool_name="get_weather", tool_call_id=CALL.id),
]


def fixture(name: str) -> PromptTemplate:
    source = (FIXTURES / name).read_text(encoding="utf-8")
    if name.endswith(".gotmpl"):
        return OllamaTemplate(source)
    return JinjaChatTemplate(source, bos_token="<bos>", eos_token="</s>")


def test_hugging_face_variables() -> None:
    """The exact values a Jinja template sees: keys a message does not use are absent (templates test for them)."""
    dump = JinjaChatTemplate(
        "{{ messages | tojson }}|{{ tools is defined and (tools | tojson) }}|"
        "{{ enable_thinking is defined and enable_thinking }}|{{ reasoning_effort is defined and reasoning_effort }}"
    )
    messages, tools, thinking, effort = dump.render_raw(CHAT, [WEATHER], True).split("|")
    assert json.loads(messages) == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {"id": CALL.id, "type": "function", "function": {"name": "get_weather", "arguments": CALL.arguments}}
            ],
            "reasoning_content": "Use the tool.",
        },
        {"role": "tool", "content": "18C", "name": "get_weather", "tool_call_id": CALL.id},
        {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": CALL.id},
    ]
    assert json.loads(tools) == [WEATHER.as_template_value()]
    assert (thinking, effort) == ("True", "False")
    assert dump.render_raw(CHAT[:2], [], None).split("|")[1:] == ["False", "False", "False"]
    assert dump.render_raw(CHAT[:2], [], "high").split("|")[2:] == ["True", "high"]


def test_tojson_keeps_key_order_and_does_not_escape_html() -> None:
    """As Hugging Face's tojson: the prompt then matches what the model was trained on."""
    template = JinjaChatTemplate("{{ tools[0] | tojson }}{{ tools[0].function.parameters | tojson(indent=2) }}")
    text = template.render_raw([], [WEATHER], None)
    assert text.startswith(
        '{"type": "function", "function": {"name": "get_weather", "description": "The weather <now>"'
    )
    assert '{\n  "type": "object",\n  "properties": {' in text


CAPABILITIES = {
    # fixture: (system, tools, tool calls, tool results, thinking, arguments as a JSON string)
    "qwen2.5-instruct.jinja": (True, True, True, True, False, False),
    "qwen3.jinja": (True, True, True, True, True, False),
    "llama-3.2-instruct.jinja": (True, True, True, True, False, False),
    "mistral-small-3.1-instruct.jinja": (True, True, True, True, False, False),
    "gemma-3-it.jinja": (True, False, False, False, False, False),
    "phi-4-mini-instruct.jinja": (True, False, False, True, False, False),
    "deepseek-r1-distill-qwen.jinja": (True, False, True, True, False, True),
    "qwen2.5.gotmpl": (True, True, True, True, False, False),
    "qwen3.gotmpl": (True, True, True, True, True, False),
    "llama3.2.gotmpl": (True, True, True, True, False, False),
    "mistral-0.3.gotmpl": (True, True, True, True, False, False),
    "mistral-small-3.2.gotmpl": (True, True, True, True, False, False),
    "phi4-mini.gotmpl": (True, True, True, True, False, False),
    "gemma3-270m.gotmpl": (True, False, False, False, False, False),
    "command-r.gotmpl": (True, True, True, True, False, False),
    "deepseek.gotmpl": (True, True, True, True, True, False),
}


@pytest.mark.parametrize(("name", "expected"), CAPABILITIES.items())
def test_capabilities_are_found_by_rendering_probes(name: str, expected: tuple[bool, ...]) -> None:
    template = fixture(name)
    assert template.capabilities == TemplateCapabilities(*expected)


def test_default_and_legacy_templates() -> None:
    assert DefaultTemplate().capabilities == TemplateCapabilities(True, False, False, True, False)
    legacy = OllamaTemplate("{{ if .System }}{{ .System }} {{ end }}[INST] {{ .Prompt }} [/INST] {{ .Response }}")
    assert legacy.capabilities == TemplateCapabilities(True, False, False, False, False)


TOOLS_TEXT = (
    "You can call these tools:\n"
    + json.dumps([WEATHER.as_template_value()["function"]], indent=2)
    + '\n\nTo call tools, answer with only this JSON and nothing else:\n{"tool_calls": [{"name": "<tool name>", '
    '"arguments": {"<argument>": "<value>"}}]}\nOtherwise answer normally.'
)


def test_gemma3_polyfill() -> None:
    """Gemma 3's template has no tools and refuses a tool role (its roles must alternate): the tools go into the
    system text, which the template merges into the first user turn; the call is written in the generic shape; both
    results become one user turn."""
    text = fixture("gemma-3-it.jinja").render_chat(CHAT, [WEATHER])
    assert text == (
        "<bos><start_of_turn>user\n"
        f"Be brief.\n\n{TOOLS_TEXT}\n\nWeather in Paris?<end_of_turn>\n"
        "<start_of_turn>model\n"
        '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}<end_of_turn>\n'
        "<start_of_turn>user\n"
        f'{{"tool_response": {{"tool": "get_weather", "tool_call_id": "{CALL.id}", "content": "18C"}}}}\n'
        f'{{"tool_response": {{"tool": "get_weather", "tool_call_id": "{CALL.id}", "content": "sunny"}}}}'
        "<end_of_turn>\n<start_of_turn>model\n"
    )
    # Without a system message, the tools still get one (merged into the first user turn by the template).
    assert fixture("gemma-3-it.jinja").render_chat(CHAT[1:2], [WEATHER]) == (
        f"<bos><start_of_turn>user\n{TOOLS_TEXT}\n\nWeather in Paris?<end_of_turn>\n<start_of_turn>model\n"
    )


def test_default_template_polyfill() -> None:
    text = DefaultTemplate().render_chat([*CHAT, ChatMessage("assistant", "18C and sunny.")], [WEATHER])
    assert text == (
        f"Be brief.\n\n{TOOLS_TEXT}\n\n"
        "User: Weather in Paris?\n"
        'Assistant: {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}]}\n'
        "Tool (get_weather): 18C\nTool (get_weather): sunny\n"
        "Assistant: 18C and sunny.\nAssistant:"
    )


def test_a_template_without_a_system_role_gets_it_in_the_first_user_message() -> None:
    strict = JinjaChatTemplate(
        "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('no system role') }}{% endif %}"
        "[{{ m.role }}]{{ m.content }}{% endfor %}[assistant]"
    )
    assert not strict.capabilities.system_role
    assert strict.render_chat([*CHAT[:2], ChatMessage("user", "And Rome?")]) == (
        "[user]Be brief.\n\nWeather in Paris?[user]And Rome?[assistant]"
    )
    assert strict.render_chat([ChatMessage("system", "Only system.")]) == "[user]Only system.[assistant]"


def test_arguments_go_as_a_json_string_to_templates_that_need_it() -> None:
    """DeepSeek R1's template concatenates the arguments into the prompt: they must be a string there."""
    text = fixture("deepseek-r1-distill-qwen.jinja").render_chat(CHAT, [WEATHER])
    assert (
        "<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather\n"
        '```json\n{"city": "Paris", "unit": "c"}\n```<｜tool▁call▁end｜>'
    ) in text
    assert TOOLS_TEXT in text  # no tools in this template: described in the system text it prints first


def test_qwen3_thinking_switch_and_reasoning() -> None:
    qwen3 = fixture("qwen3.jinja")
    question = [ChatMessage("user", "Hi")]
    assert qwen3.render_chat(question, think=False).endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert qwen3.render_chat(question, think=True).endswith("<|im_start|>assistant\n")
    assert qwen3.render_chat(question) == qwen3.render_chat(question, think=True)
    text = qwen3.render_chat(CHAT, [WEATHER])
    assert "<|im_start|>assistant\n<think>\nUse the tool.\n</think>\n\n<tool_call>\n" in text


def test_mistral_shows_tools_before_the_last_user_message_and_short_call_ids() -> None:
    text = fixture("mistral-small-3.1-instruct.jinja").render_chat([*CHAT, ChatMessage("user", "Thanks!")], [WEATHER])
    assert text.startswith("<bos>[SYSTEM_PROMPT]You are a helpful assistant that can call tools.")
    assert text.index("[AVAILABLE_TOOLS]") > text.index("[TOOL_RESULTS]")  # before the last user message only
    assert '[AVAILABLE_TOOLS] [{"type": "function", "function": {"name": "get_weather", ' in text
    assert (
        '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}, "id": "78899aabb"}]</s>'
        in text
    )
    assert '"id": "78899aabb"}]</s>[TOOL_RESULTS] {"content": 18C, "call_id": "78899aabb"}[/TOOL_RESULTS]' in text


def test_llama32_puts_the_tools_in_the_first_user_message() -> None:
    text = fixture("llama-3.2-instruct.jinja").render_chat(CHAT, [WEATHER])
    assert "Environment: ipython\n" in text
    first_user = text.split("<|start_header_id|>user<|end_header_id|>\n\n", 1)[1]
    assert first_user.startswith("Given the following functions, please respond with a JSON for a function call ")
    assert '{\n    "type": "function",\n    "function": {\n        "name": "get_weather"' in first_user
    assert '{"name": "get_weather", "parameters": {"city": "Paris", "unit": "c"}}<|eot_id|>' in text
    assert '<|start_header_id|>ipython<|end_header_id|>\n\n"18C"<|eot_id|>' in text  # the template quotes results


def test_prompt_builder_passes_tools_and_think() -> None:
    builder = PromptBuilder(DefaultTemplate(), ModelSettings(model=Path("m.gguf"), system="Be kind."))
    assert builder.chat([ChatMessage("user", "Hi")], [WEATHER]) == f"Be kind.\n\n{TOOLS_TEXT}\n\nUser: Hi\nAssistant:"
    qwen3 = PromptBuilder(fixture("qwen3.jinja"), ModelSettings(model=Path("m.gguf")))
    assert qwen3.chat([ChatMessage("user", "Hi")], think=False).endswith("<think>\n\n</think>\n\n")


def test_a_tool_result_is_linked_to_the_call_it_answers() -> None:
    """Ollama clients send the tool's name, OpenAI clients the call's id; templates read one or the other."""
    other = ToolCall("get_time", {"zone": "CET"}, id="call_ffeeddccbbaa998877665544")
    chat = [
        ChatMessage("user", "Weather and time?"),
        ChatMessage("assistant", "", tool_calls=(CALL, other)),
        ChatMessage("tool", "12:00", tool_name="get_time"),  # Ollama: the name only
        ChatMessage("tool", "18C", tool_call_id=CALL.id),  # OpenAI: the id only
    ]
    dump = JinjaChatTemplate(
        "{% for m in messages if m.role == 'tool' %}{{ m.name }} {{ m.tool_call_id }} {{ m.content }};{% endfor %}"
    )
    assert dump.render_chat(chat) == f"get_time {other.id} 12:00;get_weather {CALL.id} 18C;"
    unnamed = [*chat[:2], ChatMessage("tool", "18C"), ChatMessage("tool", "12:00")]  # neither: in call order
    assert dump.render_chat(unnamed) == f"get_weather {CALL.id} 18C;get_time {other.id} 12:00;"
    # Mistral's template refuses a result without the call's id; linked, it renders.
    text = fixture("mistral-small-3.1-instruct.jinja").render_chat(unnamed)
    assert '[TOOL_RESULTS] {"content": 18C, "call_id": "78899aabb"}[/TOOL_RESULTS]' in text
