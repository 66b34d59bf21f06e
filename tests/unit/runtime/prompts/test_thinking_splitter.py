"""Reasoning apart from the answer while a reply streams: the tags read from real templates, replies that start
inside the reasoning (DeepSeek R1 opens <think> in the prompt), and pieces of any size."""

from __future__ import annotations

from pathlib import Path

import pytest

from slm_runtime.prompts import ChatMessage, JinjaChatTemplate, OllamaTemplate
from slm_runtime.prompts.thinking import ThinkingSplitter, opens_thinking, thinking_tags

FIXTURES = Path(__file__).parent.parent / "tools" / "fixtures"
THINK = ("<think>", "</think>")


def source(name: str) -> str:
    return (FIXTURES / name).read_text(encoding="utf-8")


def split(text: str, step: int, splitter: ThinkingSplitter | None = None) -> tuple[list[tuple[str, str]], str, str]:
    """Each feed's (thinking, content), and the whole thinking and content."""
    splitter = splitter or ThinkingSplitter()
    outputs = [splitter.feed(text[i : i + step]) for i in range(0, len(text), step)]
    outputs.append(splitter.finish())
    return outputs, "".join(t for t, _ in outputs), "".join(c for _, c in outputs)


@pytest.mark.parametrize(
    ("name", "tags"),
    [
        ("qwen3.jinja", THINK),
        ("qwen3.gotmpl", THINK),
        ("deepseek-r1-distill-qwen.jinja", THINK),
        ("deepseek.gotmpl", THINK),
        ("qwen2.5-instruct.jinja", None),
        ("gemma-3-it.jinja", None),
        ("llama3.2.gotmpl", None),
    ],
)
def test_tags_are_read_from_the_template(name: str, tags: tuple[str, str] | None) -> None:
    assert thinking_tags(source(name)) == tags


def test_magistral_tags() -> None:
    assert thinking_tags("{{- if .Thinking }}[THINK]{{ .Thinking }}[/THINK]{{ end }}") == ("[THINK]", "[/THINK]")
    _, thinking, content = split("[THINK]Hmm.[/THINK]Answer.", 1, ThinkingSplitter(("[THINK]", "[/THINK]")))
    assert (thinking, content) == ("Hmm.", "Answer.")


def test_whether_the_prompt_opens_the_reasoning() -> None:
    deepseek = JinjaChatTemplate(source("deepseek-r1-distill-qwen.jinja"))
    assert opens_thinking(deepseek.render_chat([ChatMessage("user", "Hi")]), THINK)
    qwen3 = JinjaChatTemplate(source("qwen3.jinja"))
    assert not opens_thinking(qwen3.render_chat([ChatMessage("user", "Hi")], think=False), THINK)  # opened and closed
    assert not opens_thinking(qwen3.render_chat([ChatMessage("user", "Hi")], think=True), THINK)
    assert not opens_thinking(OllamaTemplate(source("qwen3.gotmpl")).render_chat([ChatMessage("user", "Hi")]), THINK)


REPLY = "<think>\nThe user greets me.\nI greet back.\n</think>\n\nHello! How can I help?"


@pytest.mark.parametrize("step", [1, 2, 3, 7, len(REPLY)])
def test_pieces_of_any_size_give_the_same_split(step: int) -> None:
    _, thinking, content = split(REPLY, step)
    assert thinking == "The user greets me.\nI greet back."
    assert content == "Hello! How can I help?"


def test_reasoning_streams_before_its_end_and_the_closing_tag_is_held_back() -> None:
    splitter = ThinkingSplitter()
    assert splitter.feed("<thi") == ("", "")
    assert splitter.feed("nk>Step one") == ("Step one", "")
    assert splitter.feed(". </th") == (".", "")  # the space and a possible closing tag wait
    assert splitter.feed("inking about it") == (" </thinking about it", "")  # not the tag after all
    assert splitter.feed("</think>\n\nDone") == ("", "Done")
    assert splitter.feed(".") == ("", ".")
    assert splitter.finish() == ("", "")


def test_a_reply_without_reasoning_streams_at_once() -> None:
    outputs, thinking, content = split("Plain answer, no <think> here.", 1)
    assert thinking == ""
    assert content == "Plain answer, no <think> here."  # tags after the start are content
    assert outputs[0] == ("", "P")


def test_a_reply_that_starts_inside_the_reasoning() -> None:
    """DeepSeek R1's prompt ends with <think>: the reply starts inside it."""
    _, thinking, content = split("Let me see.\n</think>\n\nIt is 4.", 1, ThinkingSplitter(THINK, inside=True))
    assert (thinking, content) == ("Let me see.", "It is 4.")


def test_reasoning_cut_off_is_reasoning_and_a_lone_tag_start_is_content() -> None:
    assert split("<think>Still thinking when the tokens ran out", 4)[1:] == (
        "Still thinking when the tokens ran out",
        "",
    )
    assert split("<thi", 1)[1:] == ("", "<thi")
    assert split("  \n", 1)[1:] == ("", "  \n")
