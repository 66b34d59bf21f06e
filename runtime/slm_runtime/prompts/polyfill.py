"""What to do where a template lacks a capability (:mod:`slm_runtime.prompts.capabilities`), as llama.cpp's minja
does: tools are described in the system message in the generic shape (:mod:`slm_runtime.tools.generic`), an
assistant's earlier calls are written into its content in that shape, tool results become user messages that
name the tool, and system text goes into the first user message. The template then renders plain messages.
"""

from __future__ import annotations

from collections.abc import Sequence

from slm_runtime.prompts.base import ChatMessage
from slm_runtime.prompts.capabilities import TemplateCapabilities
from slm_runtime.tools.generic import render_generic_calls, render_tool_result, tools_instruction
from slm_runtime.tools.types import ToolFunction

__all__ = ["apply_polyfills"]


def _with_system_text(messages: list[ChatMessage], text: str) -> list[ChatMessage]:
    if messages and messages[0].role == "system":
        first = messages[0]
        content = f"{first.content}\n\n{text}" if first.content else text
        return [ChatMessage("system", content), *messages[1:]]
    return [ChatMessage("system", text), *messages]


def _without_system_role(messages: list[ChatMessage]) -> list[ChatMessage]:
    system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
    rest = [m for m in messages if m.role != "system"]
    if not system:
        return rest
    for index, message in enumerate(rest):
        if message.role == "user":
            rest[index] = ChatMessage("user", f"{system}\n\n{message.content}")
            return rest
    return [ChatMessage("user", system), *rest]


def apply_polyfills(
    messages: Sequence[ChatMessage], tools: Sequence[ToolFunction], capabilities: TemplateCapabilities
) -> tuple[list[ChatMessage], tuple[ToolFunction, ...]]:
    """The messages and tools to hand the template, with what it cannot show rewritten into what it can."""
    out = list(messages)
    template_tools = tuple(tools)
    if tools and not capabilities.tools:
        out = _with_system_text(out, tools_instruction(tools))
        template_tools = ()
    rewritten: list[ChatMessage] = []
    previous_was_result = False
    for message in out:
        if message.role == "assistant" and message.tool_calls and not capabilities.tool_calls:
            text = render_generic_calls(message.tool_calls, message.content)
            rewritten.append(ChatMessage("assistant", text, thinking=message.thinking))
            previous_was_result = False
        elif message.role == "tool" and not capabilities.tool_responses:
            text = render_tool_result(message.content, message.tool_name, message.tool_call_id)
            if previous_was_result:  # one user turn for a round of results keeps roles alternating
                rewritten[-1] = ChatMessage("user", f"{rewritten[-1].content}\n{text}")
            else:
                rewritten.append(ChatMessage("user", text))
            previous_was_result = True
        else:
            rewritten.append(message)
            previous_was_result = False
    if not capabilities.system_role:
        rewritten = _without_system_role(rewritten)
    return rewritten, template_tools
