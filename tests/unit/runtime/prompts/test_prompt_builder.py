"""A request's prompt: the default system prompt and preset messages placed as Ollama places them, and its tokens
fitted into the context."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from slm_runtime.engines.fake import BOS, FakeEngine
from slm_runtime.errors import ContextLengthExceededError, InvalidRequestError
from slm_runtime.prompts import (
    ChatMessage,
    DefaultTemplate,
    OllamaTemplate,
    PromptBuilder,
    check_token_ids,
    fit_context,
    tokenize_prompt,
)
from slm_runtime.settings import ModelSettings

PRESET = [{"role": "user", "content": "Who are you?"}, {"role": "assistant", "content": "A lighthouse keeper."}]


def builder(**model: Any) -> PromptBuilder:
    return PromptBuilder(DefaultTemplate(), ModelSettings(model=Path("m.gguf"), **model))


def test_chat_gets_the_default_system_prompt_then_the_preset_messages() -> None:
    text = builder(system="Be brief.", messages=PRESET).chat([ChatMessage("user", "Hi")])
    assert text == "Be brief.\n\nUser: Who are you?\nAssistant: A lighthouse keeper.\nUser: Hi\nAssistant:"


def test_a_system_message_of_the_request_replaces_the_default() -> None:
    text = builder(system="Be brief.").chat([ChatMessage("system", "Be verbose."), ChatMessage("user", "Hi")])
    assert text == "Be verbose.\n\nUser: Hi\nAssistant:"


def test_generate_puts_the_preset_only_before_a_first_turn() -> None:
    prompts = builder(system="Be brief.", messages=PRESET)
    first = prompts.generate("Hi", None, None, raw=False)
    assert first == "Be brief.\n\nUser: Who are you?\nAssistant: A lighthouse keeper.\nUser: Hi\nAssistant:"
    assert prompts.generate("Hi", None, None, raw=False, first_turn=False) == "Be brief.\n\nHi"


def test_generate_with_its_own_system_template_or_raw() -> None:
    prompts = builder(system="Be brief.")
    assert prompts.generate("Hi", "Shout.", None, raw=False) == "Shout.\n\nHi"
    assert prompts.generate("Hi", None, "[{{ .System }}|{{ .Prompt }}]", raw=False) == "[Be brief.|Hi]"
    assert prompts.generate("Hi {{ .Prompt }}", None, None, raw=True) == "Hi {{ .Prompt }}"


def test_the_template_stops_apply_unless_the_request_brings_its_own_template_or_is_raw() -> None:
    prompts = builder()
    assert prompts.generate_stops(None, raw=False) == ("\nUser:",)
    assert prompts.generate_stops("{{ .Prompt }}", raw=False) == ()
    assert prompts.generate_stops(None, raw=True) == ()
    assert (
        PromptBuilder(OllamaTemplate("{{ .Prompt }}"), ModelSettings(model=Path("m.gguf"))).generate_stops(
            None, raw=False
        )
        == ()
    )


def test_fit_context_keeps_short_prompts_and_truncates_long_ones_as_ollama_does() -> None:
    assert fit_context([1, 2, 3], 4, truncate=False) == [1, 2, 3]
    long = list(range(100))
    fitted = fit_context(long, 40, truncate=True)
    assert fitted == [0, *range(71, 100)]  # the first token, then the last 3/4 of the context less one
    assert len(fitted) == 30
    with pytest.raises(ContextLengthExceededError, match="100 tokens, longer than the context length of 40"):
        fit_context(long, 40, truncate=False)


def test_token_ids_outside_the_vocabulary_are_refused_by_position(fake_engine: FakeEngine) -> None:
    check_token_ids(fake_engine, [0, fake_engine.info.vocab_size - 1], "context")
    with pytest.raises(InvalidRequestError, match=r"context\[1\] = 259 is not a token id") as caught:
        check_token_ids(fake_engine, [5, fake_engine.info.vocab_size], "context")
    assert caught.value.param == "context"
    with pytest.raises(InvalidRequestError, match=r"input\[0\] = -1"):
        check_token_ids(fake_engine, [-1], "input")


def test_tokenize_prompt_adds_bos_unless_the_text_starts_with_it() -> None:
    engine = FakeEngine(bos_token="<s>")
    try:
        assert asyncio.run(tokenize_prompt(engine, "Hi")) == [BOS, *engine.tokenize("Hi", add_special=False)]
        assert asyncio.run(tokenize_prompt(engine, "<s>Hi")) == engine.tokenize("<s>Hi", add_special=False)
    finally:
        engine.close()
