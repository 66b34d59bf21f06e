"""Mistral: ``[TOOL_CALLS]`` then a JSON list of calls (Mistral 7B v0.3, Nemo, Small 3.1), or, in the newer
templates (Small 3.2, Magistral, Devstral 2507), ``[TOOL_CALLS]name[ARGS]{json}`` once per call, optionally with
``[CALL_ID]id`` before ``[ARGS]``."""

from __future__ import annotations

import re

from slm_runtime.tools.parsers.base import Extracted, ToolCallParser
from slm_runtime.tools.parsers.values import calls_from_value, json_prefix, json_values, loads_lenient
from slm_runtime.tools.types import ToolCall

__all__ = ["MistralParser"]

_MARKER = "[TOOL_CALLS]"
_NAMED = re.compile(r"(?P<name>[^\s\[\]{}]+)(?:\[CALL_ID\][^\[]*)?\[ARGS\]")


def _value_at(text: str, start: int) -> tuple[object, int] | None:
    parsed = json_prefix(text, start)
    if parsed is not None:
        return parsed
    try:  # a cut-off last call
        return loads_lenient(text[start:].strip()), len(text)
    except ValueError:
        return None


def _read_part(part: str) -> tuple[list[ToolCall], str] | None:
    """The calls at the start of the text after one marker, and the text after them."""
    text = part.lstrip()
    if text.startswith(("[", "{")):
        values, end = json_values(text)
        parsed = (values[0], end) if len(values) == 1 else _value_at(text, 0)
        if parsed is None:
            return None
        calls = calls_from_value(parsed[0])
        return (calls, text[parsed[1] :]) if calls else None
    named = _NAMED.match(text)
    if named is None:
        return None
    parsed = _value_at(text, named.end())
    if parsed is None or not isinstance(parsed[0], dict):
        return None
    return [ToolCall(named["name"], parsed[0])], text[parsed[1] :]


class MistralParser(ToolCallParser):
    """Mistral's ``[TOOL_CALLS]``, anywhere in the reply, in either of its two shapes."""

    family = "mistral"
    anywhere = (_MARKER,)

    def extract(self, text: str) -> Extracted | None:
        parts = text.split(_MARKER)
        content = [parts[0]]
        calls: list[ToolCall] = []
        for part in parts[1:]:
            found = _read_part(part)
            if found is None:
                content.append(_MARKER + part)
            else:
                calls.extend(found[0])
                content.append(found[1])
        if not calls:
            return None
        return "".join(content).strip(), calls
