"""OpenAI request shapes into the runtime's values: refused fields, messages (with tool calls and tool results),
tools and the tool choice. Pure; each error is a 400 naming the field."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from slm_runtime.errors import InvalidRequestError
from slm_runtime.openai.protocol import ChatCompletionRequest, ChatMessage, MessageToolCall, Tool
from slm_runtime.prompts import ChatMessage as PromptMessage
from slm_runtime.tool_chat import ToolRequest
from slm_runtime.tools.types import ToolCall, ToolChoice, ToolChoiceMode, ToolFunction, new_call_id

__all__ = ["prompt_messages", "refuse", "stops", "text_of", "tool_request"]

_MODES: dict[str, ToolChoiceMode] = {"none": "none", "auto": "auto", "required": "required"}


def refuse(body: BaseModel, refused: Mapping[str, str]) -> None:
    """A 400 naming the first field of ``refused`` that ``body`` sets (to anything but null or empty)."""
    for name, reason in refused.items():
        if getattr(body, name) not in (None, {}, [], ""):
            raise InvalidRequestError(f"{reason}: remove {name}", param=name)


def stops(stop: str | list[str] | None) -> tuple[str, ...] | None:
    if stop is None:
        return None
    return (stop,) if isinstance(stop, str) else tuple(stop)


def text_of(message: ChatMessage, index: int) -> str:
    if message.content is None:
        return ""
    if isinstance(message.content, str):
        return message.content
    parts: list[str] = []
    for part_index, part in enumerate(message.content):
        if part.type != "text":
            raise InvalidRequestError(
                f'content parts of type "{part.type}" are not supported: send text',
                param=f"messages[{index}].content[{part_index}].type",
            )
        parts.append(part.text or "")
    return "".join(parts)


def _history_call(call: MessageToolCall, param: str) -> ToolCall:
    try:
        arguments = json.loads(call.function.arguments)
    except json.JSONDecodeError as exc:
        raise InvalidRequestError(
            f"a tool call's arguments must be a JSON object as a string ({exc.msg})",
            param=f"{param}.function.arguments",
        ) from exc
    if not isinstance(arguments, dict):
        raise InvalidRequestError(
            "a tool call's arguments must be a JSON object as a string", param=f"{param}.function.arguments"
        )
    return ToolCall(call.function.name, arguments, id=call.id or new_call_id())


def prompt_messages(messages: Sequence[ChatMessage]) -> list[PromptMessage]:
    """The chat's messages for the template: developer as system, assistant tool calls with their arguments as
    objects, and each tool result with the name of the call it answers (found by its ``tool_call_id``)."""
    names: dict[str, str] = {}
    out: list[PromptMessage] = []
    for index, message in enumerate(messages):
        param = f"messages[{index}]"
        if message.tool_calls and message.role != "assistant":
            raise InvalidRequestError("only assistant messages carry tool_calls", param=f"{param}.tool_calls")
        calls = tuple(
            _history_call(call, f"{param}.tool_calls[{j}]") for j, call in enumerate(message.tool_calls or ())
        )
        names.update((call.id, call.name) for call in calls)
        call_id = message.tool_call_id or ""
        if message.role == "tool" and not call_id:
            raise InvalidRequestError(
                "a tool message needs the tool_call_id of the call it answers", param=f"{param}.tool_call_id"
            )
        out.append(
            PromptMessage(
                "system" if message.role == "developer" else message.role,
                text_of(message, index),
                tool_calls=calls,
                tool_name=names.get(call_id, "") if message.role == "tool" else "",
                tool_call_id=call_id,
                thinking=message.reasoning_content or "",
            )
        )
    return out


def _tool(tool: Tool) -> ToolFunction:
    parameters = tool.function.parameters
    return ToolFunction(
        tool.function.name,
        tool.function.description or "",
        parameters if parameters is not None else {"type": "object", "properties": {}},
    )


def _choice(value: str | dict[str, Any] | None, has_tools: bool, parallel: bool) -> ToolChoice:
    if value is None:
        return ToolChoice("auto" if has_tools else "none", parallel=parallel)
    if isinstance(value, str) and value in _MODES:
        return ToolChoice(_MODES[value], parallel=parallel)
    if isinstance(value, dict) and value.get("type") == "function":
        function = value.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if isinstance(name, str) and name:
            return ToolChoice("function", function=name, parallel=parallel)
    raise InvalidRequestError(
        'tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}',
        param="tool_choice",
    )


def tool_request(body: ChatCompletionRequest) -> ToolRequest:
    """The request's tools and what it allows (``parallel_tool_calls`` defaults to true, as OpenAI's)."""
    tools = tuple(_tool(tool) for tool in body.tools or ())
    parallel = body.parallel_tool_calls is not False
    return ToolRequest(tools, _choice(body.tool_choice, bool(tools), parallel))
