"""Ollama request shapes into the runtime's values: chat messages (tool calls, tool results, thinking), tools, the
``think`` switch and the options a request cannot change. Pure; each error is a 400 naming the field."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from slm_runtime.errors import InvalidRequestError
from slm_runtime.ollama.protocol import OPTIONS_REFUSED, ChatMessage, KeepAlive, Options, Think, Tool
from slm_runtime.prompts import ChatMessage as PromptMessage
from slm_runtime.settings import EngineSettings
from slm_runtime.tool_chat import ToolRequest
from slm_runtime.tools.types import ToolCall, ToolChoice, ToolFunction, new_call_id

__all__ = ["check_options", "check_shift", "check_think", "keep_alive_seconds", "prompt_messages", "tool_request"]

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def keep_alive_seconds(value: KeepAlive) -> float | None:
    """Ollama's ``keep_alive``: seconds as a number, or a Go duration ("5m", "1h30m", "0"); None when absent
    (the server's default: stay loaded); negative: stay loaded."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return float(value)
    text = value.strip()
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    try:
        return sign * float(body)
    except ValueError:
        pass
    parts = _PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise InvalidRequestError(
            f'keep_alive "{value}" is not a duration: send seconds or a duration such as "5m" or "1h"',
            param="keep_alive",
        )
    return sign * sum(float(number) * _UNITS[unit] for number, unit in parts)


def prompt_messages(messages: Sequence[ChatMessage]) -> list[PromptMessage]:
    """The chat's messages for the template: assistant tool calls, and each tool result with its tool's name (sent
    as ``tool_name``, or found from the ``tool_call_id`` of an earlier call)."""
    names: dict[str, str] = {}
    out: list[PromptMessage] = []
    for index, message in enumerate(messages):
        if message.images:
            raise InvalidRequestError(
                "this model does not support images: remove them", param=f"messages[{index}].images"
            )
        calls = tuple(
            ToolCall(call.function.name, call.function.arguments, id=call.id or new_call_id())
            for call in message.tool_calls or ()
        )
        names.update((call.id, call.name) for call in calls)
        call_id = message.tool_call_id or ""
        tool_name = message.tool_name or names.get(call_id, "") if message.role == "tool" else ""
        out.append(
            PromptMessage(
                message.role,
                message.content,
                tool_calls=calls,
                tool_name=tool_name,
                tool_call_id=call_id,
                thinking=message.thinking or "",
            )
        )
    return out


def tool_request(tools: Sequence[Tool] | None) -> ToolRequest:
    """Ollama's tools; it has no tool choice: the model decides (``auto``)."""
    functions = tuple(
        ToolFunction(
            tool.function.name,
            tool.function.description or "",
            tool.function.parameters if tool.function.parameters is not None else {"type": "object", "properties": {}},
        )
        for tool in tools or ()
    )
    return ToolRequest(functions, ToolChoice("auto" if functions else "none"))


def check_think(think: Think, model: str, supports_thinking: bool) -> Think:
    """The request's ``think`` where the template thinks (on unless turned off, as Ollama's default); Ollama's 400
    where it does not and the request asks to think."""
    if supports_thinking:
        return True if think is None else think
    if think:
        raise InvalidRequestError(f'"{model}" does not support thinking', param="think")
    return None


def check_shift(shift: bool | None) -> None:
    if shift:
        raise InvalidRequestError(
            "context shift is not supported: a generation stops at the end of the context (send shift: false)",
            param="shift",
        )


def check_options(options: Options | None, engine: EngineSettings) -> None:
    """A 400 for options this runtime cannot honour: load-time ones that differ from the served model's, and
    those it does not implement."""
    if options is None:
        return
    served_values = {
        "num_thread": engine.threads or os.cpu_count(),
        "num_batch": engine.batch_size,
        "num_gpu": engine.gpu_layers,
    }
    for name, served in served_values.items():
        value = getattr(options, name)
        all_layers = name == "num_gpu" and value is not None and value < 0 and (served or 0) < 0
        if value is not None and value != served and not all_layers:
            raise InvalidRequestError(
                f"options.{name} is {value} but the model was loaded with {served}, and a request cannot reload it: "
                "set it in the model's parameters instead",
                param=f"options.{name}",
            )
    for name in OPTIONS_REFUSED:
        value = getattr(options, name)
        if value is not None and not (name == "typical_p" and value == 1):
            raise InvalidRequestError(f"options.{name} is not supported: remove it", param=f"options.{name}")
