"""Ollama request fields read into the runtime's values (slm_runtime.ollama.wire): keep_alive durations, and
messages with tool calls, tool results and thinking."""

from __future__ import annotations

import pytest

from slm_runtime.errors import InvalidRequestError
from slm_runtime.ollama.protocol import ChatMessage
from slm_runtime.ollama.wire import keep_alive_seconds, prompt_messages


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(None, None), (0, 0.0), ("0", 0.0), (30, 30.0), ("5m", 300.0), ("1h30m", 5400.0), ("-1", -1.0), ("1.5s", 1.5)],
)
def test_keep_alive_takes_seconds_or_go_durations(value: str | int | None, seconds: float | None) -> None:
    assert keep_alive_seconds(value) == seconds


@pytest.mark.parametrize("value", ["soon", "5 minutes", "m5", ""])
def test_a_keep_alive_that_is_no_duration_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequestError) as caught:
        keep_alive_seconds(value)
    assert caught.value.param == "keep_alive"


def test_messages_carry_calls_results_and_thinking_to_the_template() -> None:
    call = {"id": "call_7", "function": {"name": "get_weather", "arguments": {"city": "Oslo"}}}
    messages = [
        ChatMessage.model_validate({"role": "user", "content": "Weather?"}),
        ChatMessage.model_validate({"role": "assistant", "thinking": "Ask the tool.", "tool_calls": [call]}),
        ChatMessage.model_validate({"role": "tool", "tool_call_id": "call_7", "content": "sunny"}),
    ]
    _, assistant, tool = prompt_messages(messages)
    assert assistant.thinking == "Ask the tool."
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [("call_7", "get_weather", {"city": "Oslo"})]
    assert (tool.tool_name, tool.tool_call_id, tool.content) == ("get_weather", "call_7", "sunny")
