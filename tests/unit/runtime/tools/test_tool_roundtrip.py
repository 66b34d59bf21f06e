"""Round trips through real chat templates: a history whose assistant turn made tool calls is rendered with the
family's real template (fixtures/, see its README), the assistant's text is cut out of the prompt as the model
would have written it, and the parser the template's text selects must give back exactly those calls, whole or
fed one character at a time."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from slm_runtime.prompts import ChatMessage, DefaultTemplate, JinjaChatTemplate, OllamaTemplate, PromptTemplate
from slm_runtime.prompts.thinking import ThinkingSplitter, thinking_tags
from slm_runtime.tools.parsers import parser_for
from slm_runtime.tools.types import ToolCall, ToolFunction

FIXTURES = Path(__file__).parent / "fixtures"

WEATHER = ToolFunction(
    "get_weather",
    "The current weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city, e.g. Paris"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
    },
)
BOOKING = ToolFunction(
    "book_table",
    "Book a restaurant table",
    {
        "type": "object",
        "properties": {
            "restaurant": {"type": "string"},
            "party": {"type": "object", "properties": {"adults": {"type": "integer"}, "kids": {"type": "integer"}}},
            "times": {"type": "array", "items": {"type": "string"}},
            "terrace": {"type": "boolean"},
        },
        "required": ["restaurant", "party"],
    },
)
TOOLS = [WEATHER, BOOKING]
QUESTION = 'Weather in Paris, and a table at Chez Léon (it\'s 7:30pm, "quiet" please)?'
ONE_CALL = (ToolCall("get_weather", {"city": "Paris", "unit": "celsius"}, id="call_0a1b2c3d4e5f6a7b8c9d0e1f"),)
TWO_CALLS = (
    *ONE_CALL,
    ToolCall(
        "book_table",
        {
            "restaurant": 'Chez Léon <"quiet">',
            "party": {"adults": 2, "kids": 0},
            "times": ["19:30", "20:00"],
            "terrace": False,
        },
        id="call_1f0e1d2c3b4a5f6e7d8c9b0a",
    ),
)


@dataclass(frozen=True)
class Family:
    """A template fixture and where the assistant's text sits in what it renders: after ``start`` (the first
    one after the question) up to ``end``."""

    fixture: str
    start: str
    end: str
    family: str
    parallel: bool = True

    def template(self) -> PromptTemplate:
        if not self.fixture:
            return DefaultTemplate()
        source = (FIXTURES / self.fixture).read_text(encoding="utf-8")
        if self.fixture.endswith(".gotmpl"):
            return OllamaTemplate(source)
        return JinjaChatTemplate(source, bos_token="<s>", eos_token="</s>")


FAMILIES = [
    Family("qwen2.5-instruct.jinja", "<|im_start|>assistant\n", "<|im_end|>", "hermes"),
    Family("qwen2.5.gotmpl", "<|im_start|>assistant\n", "<|im_end|>", "hermes"),
    Family("qwen3.jinja", "<|im_start|>assistant\n", "<|im_end|>", "hermes"),
    Family("qwen3.gotmpl", "<|im_start|>assistant\n", "<|im_end|>", "hermes"),
    Family(
        "llama-3.2-instruct.jinja",
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        "<|eot_id|>",
        "llama3",
        parallel=False,  # the template raises on more than one call per turn
    ),
    Family("llama3.2.gotmpl", "<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>", "llama3"),
    Family("mistral-small-3.1-instruct.jinja", "[/INST]", "</s>", "mistral"),
    Family("mistral-0.3.gotmpl", "[/INST]", "</s>", "mistral"),
    Family("mistral-small-3.2.gotmpl", "[/INST]", "</s>", "mistral"),
    # Ollama's phi4-mini template drops each call's closing brace; one call is repaired, two cannot be told apart.
    Family("phi4-mini.gotmpl", "<|assistant|>", "<|end|>", "phi4-mini", parallel=False),
    # No tool syntax of their own: the calls are polyfilled in the generic shape, which the parsers read back.
    Family("phi-4-mini-instruct.jinja", "<|assistant|>", "<|end|>", "phi4-mini"),
    Family("gemma-3-it.jinja", "<start_of_turn>model\n", "<end_of_turn>", "generic"),
    Family("gemma3-270m.gotmpl", "<start_of_turn>model\n", "<end_of_turn>", "generic"),
    Family("", "Assistant: ", "\n", "generic"),
]


def history(calls: tuple[ToolCall, ...], content: str = "", thinking: str = "") -> list[ChatMessage]:
    """A chat whose assistant turn made ``calls``; a tool result follows, so templates close the turn."""
    return [
        ChatMessage("system", "You are a concise assistant."),
        ChatMessage("user", QUESTION),
        ChatMessage("assistant", content, tool_calls=calls, thinking=thinking),
        *(ChatMessage("tool", '{"ok": true}', tool_name=call.name, tool_call_id=call.id) for call in calls),
    ]


def assistant_text(family: Family, prompt: str) -> str:
    """The assistant's turn as the model wrote it: after the question, between the family's markers."""
    after_question = prompt.index(QUESTION) + len(QUESTION)
    start = prompt.index(family.start, after_question) + len(family.start)
    return prompt[start : prompt.index(family.end, start)]


def parse(source: str, text: str, step: int | None = None) -> tuple[str, list[ToolCall]]:
    parser = parser_for(source)
    pieces = [text] if step is None else [text[i : i + step] for i in range(0, len(text), step)]
    streamed = "".join(parser.feed(piece) for piece in pieces)
    rest, calls = parser.finish()
    return streamed + rest, calls


def signature(calls: list[ToolCall] | tuple[ToolCall, ...]) -> list[tuple[str, dict[str, object]]]:
    return [(call.name, call.arguments) for call in calls]


# Two calls in one turn only where the template shows more than one call per turn.
ROUND_TRIPS = [(family, count) for family in FAMILIES for count in (1, 2) if count == 1 or family.parallel]


@pytest.mark.parametrize(
    ("family", "count"), ROUND_TRIPS, ids=[f"{f.fixture or 'default'}-{n}" for f, n in ROUND_TRIPS]
)
def test_calls_rendered_by_the_real_template_parse_back(family: Family, count: int) -> None:
    calls = ONE_CALL if count == 1 else TWO_CALLS
    template = family.template()
    source = getattr(template, "source", "")
    assert parser_for(source).family == family.family
    text = assistant_text(family, template.render_chat(history(calls), TOOLS, think=None))
    for step in (None, 1, 7):
        content, parsed = parse(source, text, step)
        assert signature(parsed) == signature(calls), (step, text)
        assert content == ""


@pytest.mark.parametrize(
    "family",
    [f for f in FAMILIES if f.fixture in {"qwen2.5-instruct.jinja", "qwen3.jinja", "gemma-3-it.jinja", ""}],
    ids=lambda f: f.fixture or "default",
)
def test_text_before_the_calls_is_content(family: Family) -> None:
    """(Ollama's Qwen templates show an assistant turn's content or its calls, never both.)"""
    template = family.template()
    source = getattr(template, "source", "")
    text = assistant_text(family, template.render_chat(history(ONE_CALL, "Let me look that up."), TOOLS))
    content, parsed = parse(source, text, 1)
    assert signature(parsed) == signature(ONE_CALL)
    assert content == "Let me look that up."


@pytest.mark.parametrize("fixture", ["qwen3.jinja", "qwen3.gotmpl"])
def test_qwen3_reasoning_then_calls(fixture: str) -> None:
    """Qwen 3 writes its reasoning in <think> before the calls: the splitter takes it out, the parser the rest."""
    family = next(f for f in FAMILIES if f.fixture == fixture)
    template = family.template()
    chat = history(ONE_CALL, thinking="The user wants the weather; call get_weather.")
    text = assistant_text(family, template.render_chat(chat, TOOLS, think=True))
    tags = thinking_tags(template.source)
    assert tags == ("<think>", "</think>")
    splitter = ThinkingSplitter(tags)
    parser = parser_for(template.source)
    thinking, streamed = "", ""
    for char in text:
        thought, content = splitter.feed(char)
        thinking += thought
        streamed += parser.feed(content)
    thought, content = splitter.finish()
    thinking += thought
    streamed += parser.feed(content)
    rest, calls = parser.finish()
    assert thinking == "The user wants the weather; call get_weather."
    assert streamed + rest == ""
    assert signature(calls) == signature(ONE_CALL)
