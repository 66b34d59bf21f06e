"""What to do where a template lacks a capability (:mod:`slm_runtime.prompts.capabilities`), as llama.cpp's minja
does: tools are described in the system message in the generic shape (:mod:`slm_runtime.tools.generic`), an
assistant's earlier calls are written into its content in that shape, tool results become user messages that
name the tool, and system text goes into the first user message. The template then renders plain messages.

Whatever the template, a tool result is first linked to the call it answers: OpenAI clients send only the call's
id, Ollama clients only the tool's name, and templates read one or the other (Mistral's refuses a result without
the id), so the missing one is taken from the assistant's calls before it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from slm_runtime.prompts.base import ChatMessage, TemplateCapabilities
from slm_runtime.tools.generic import render_generic_calls, render_tool_result, tools_instruction
from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["apply_polyfills", "link_tool_results"]


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


def link_tool_results(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    """The messages with each tool result's ``tool_name`` and ``tool_call_id`` both set where the calls before it
    tell them: by the id, else by the name (the first call of that name not yet answered), else the next
    unanswered call."""
    out: list[ChatMessage] = []
    unanswered: list[ToolCall] = []
    for message in messages:
        if message.role == "assistant" and message.tool_calls:
            unanswered = list(message.tool_calls)
        elif message.role == "tool" and unanswered and not (message.tool_name and message.tool_call_id):
            call = next((c for c in unanswered if c.id == message.tool_call_id), None) if message.tool_call_id else None
            if call is None and not message.tool_call_id:
                named = [c for c in unanswered if c.name == message.tool_name] if message.tool_name else unanswered
                call = named[0] if named else None
            if call is not None:
                unanswered.remove(call)
                message = replace(message, tool_name=message.tool_name or call.name, tool_call_id=call.id)
        elif message.role == "tool":
            unanswered = [c for c in unanswered if c.id != message.tool_call_id]
        out.append(message)
    return out


def apply_polyfills(
    messages: Sequence[ChatMessage], tools: Sequence[ToolFunction], capabilities: TemplateCapabilities
) -> tuple[list[ChatMessage], tuple[ToolFunction, ...]]:
    """The messages and tools to hand the template, with what it cannot show rewritten into what it can."""
    out = link_tool_results(messages)
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
