"""The generic tool-call shape, for templates that have no tool syntax of their own.

A template that cannot show tools (Gemma 3's, the default transcript) gets them described in its system message,
with an instruction to answer with one JSON object in this shape, as llama.cpp's generic format does::

    {"tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]}

(``"content"`` may sit beside ``"tool_calls"`` for text that goes with the calls). A history's earlier calls are
written the same way, so the model sees its own past calls in the shape it is asked for, and the generic parser
(:mod:`slm_runtime.tools.parsers.generic`) reads exactly this shape back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["render_generic_calls", "render_tool_result", "tools_instruction"]

_EXAMPLE = {"tool_calls": [{"name": "<tool name>", "arguments": {"<argument>": "<value>"}}]}


def tools_instruction(tools: Sequence[ToolFunction]) -> str:
    """The system-message text that offers ``tools`` and says how to call them."""
    functions = [tool.as_template_value()["function"] for tool in tools]
    return (
        "You can call these tools:\n"
        + json.dumps(functions, indent=2, ensure_ascii=False)
        + "\n\nTo call tools, answer with only this JSON and nothing else:\n"
        + json.dumps(_EXAMPLE, ensure_ascii=False)
        + "\nOtherwise answer normally."
    )


def render_generic_calls(calls: Sequence[ToolCall], content: str = "") -> str:
    """An assistant turn that made ``calls`` (with ``content`` beside them), in the generic shape."""
    value: dict[str, object] = {"tool_calls": [{"name": call.name, "arguments": call.arguments} for call in calls]}
    if content:
        value["content"] = content
    return json.dumps(value, ensure_ascii=False)


def render_tool_result(content: str, tool_name: str = "", tool_call_id: str = "") -> str:
    """A tool's result as a user message's text, naming the tool (for templates without a tool role)."""
    result: dict[str, str] = {}
    if tool_name:
        result["tool"] = tool_name
    if tool_call_id:
        result["tool_call_id"] = tool_call_id
    result["content"] = content
    return json.dumps({"tool_response": result}, ensure_ascii=False)
