"""OpenAI request fields read into the runtime's values (slm_runtime.openai.wire): messages with tool calls, tool
results and reasoning; the tool choice."""

from __future__ import annotations

from slm_runtime.openai.protocol import ChatCompletionRequest, ChatMessage
from slm_runtime.openai.wire import prompt_messages, tool_request
from slm_runtime.tools.types import ToolChoice


def test_messages_carry_calls_results_and_reasoning_to_the_template() -> None:
    call = {"id": "call_7", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    messages = [
        ChatMessage.model_validate({"role": "developer", "content": "Be brief."}),
        ChatMessage.model_validate({"role": "assistant", "reasoning_content": "Ask the tool.", "tool_calls": [call]}),
        ChatMessage.model_validate(
            {"role": "tool", "tool_call_id": "call_7", "content": [{"type": "text", "text": "ok"}]}
        ),
    ]
    system, assistant, tool = prompt_messages(messages)
    assert (system.role, system.content) == ("system", "Be brief.")
    assert assistant.thinking == "Ask the tool." and assistant.content == ""
    assert [(c.id, c.name, c.arguments) for c in assistant.tool_calls] == [("call_7", "get_weather", {"city": "Oslo"})]
    assert (tool.tool_name, tool.tool_call_id, tool.content) == ("get_weather", "call_7", "ok")


def test_the_tool_choice_defaults_to_auto_with_tools_and_parallel_calls() -> None:
    tool = {"type": "function", "function": {"name": "f"}}
    plain = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}]})
    assert tool_request(plain).choice == ToolChoice("none")
    with_tools = ChatCompletionRequest.model_validate({"model": "m", "messages": [{"role": "user"}], "tools": [tool]})
    request = tool_request(with_tools)
    assert request.choice == ToolChoice("auto") and request.tools[0].parameters == {"type": "object", "properties": {}}
    named = with_tools.model_copy(
        update={"tool_choice": {"type": "function", "function": {"name": "f"}}, "parallel_tool_calls": False}
    )
    assert tool_request(named).choice == ToolChoice("function", function="f", parallel=False)
