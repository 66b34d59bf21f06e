"""Reading the generic JSON shape (:mod:`slm_runtime.tools.generic`) back, leniently: the object the prompt asks
for, a bare call object or a list of them, optionally in a fenced ```json block, as small models write it."""

from __future__ import annotations

import re
from typing import Any

from slm_runtime.tools.parsers.values import calls_from_value, json_prefix, loads_lenient
from slm_runtime.tools.types import ToolCall

__all__ = ["GENERIC_LEADING", "extract_generic"]

GENERIC_LEADING = ("{", "[", "```json")
"""How a reply in the generic shape begins."""

_FENCE = re.compile(r"```(?:json)?[ \t]*\n?(?P<body>.*?)\n?[ \t]*```(?P<after>.*)", re.DOTALL)


def _calls_and_content(value: Any) -> tuple[list[ToolCall], str] | None:
    if isinstance(value, dict) and ("tool_calls" in value or "tool_call" in value):
        listed = value.get("tool_calls", value.get("tool_call"))
        content = value.get("content")
        content = content if isinstance(content, str) else ""
        if listed == [] and content:
            return [], content
        calls = calls_from_value(listed)
        return (calls, content) if calls else None
    calls = calls_from_value(value)
    return (calls, "") if calls else None


def extract_generic(text: str) -> tuple[str, list[ToolCall]] | None:
    """The calls of a reply written in the generic shape, and any text around them; None if it is not one."""
    body, after = text.strip(), ""
    if body.startswith("```"):
        fence = _FENCE.fullmatch(body)
        if fence is None:
            return None
        body, after = fence.group("body").strip(), fence.group("after")
    parsed = json_prefix(body)
    if parsed is not None:
        value, end = parsed
        rest = body[end:]
    else:
        try:
            value, rest = loads_lenient(body), ""
        except ValueError:
            return None
    found = _calls_and_content(value)
    if found is None:
        return None
    calls, content = found
    tail = (rest + after).strip()
    return "\n".join(part for part in (content, tail) if part), calls
