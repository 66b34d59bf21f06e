"""Llama 3.1/3.2/3.3: a reply that is a bare JSON call, ``{"name": ..., "parameters": {...}}`` (several may follow
one another, separated by ``;``), or ``<|python_tag|>`` followed by such JSON or by a built-in tool's Python call
(``brave_search.call(query="...")``)."""

from __future__ import annotations

from slm_runtime.tools.parsers.base import Extracted, ToolCallParser
from slm_runtime.tools.parsers.values import calls_from_value, json_prefix, loads_lenient, python_calls
from slm_runtime.tools.types import ToolCall

__all__ = ["Llama3Parser"]

_PYTHON_TAG = "<|python_tag|>"


def _json_calls(text: str) -> Extracted | None:
    calls: list[ToolCall] = []
    pos = 0
    while (parsed := json_prefix(text, pos)) is not None:
        found = calls_from_value(parsed[0])
        if found is None:
            break
        calls.extend(found)
        pos = parsed[1]
        while pos < len(text) and (text[pos].isspace() or text[pos] == ";"):
            pos += 1
    if calls:
        return text[pos:].strip(), calls
    try:  # one cut-off call
        found = calls_from_value(loads_lenient(text.strip()))
    except ValueError:
        return None
    return ("", found) if found else None


class Llama3Parser(ToolCallParser):
    """Llama 3.x: bare JSON at the start of the reply, or ``<|python_tag|>`` anywhere."""

    family = "llama3"
    anywhere = (_PYTHON_TAG,)
    leading = ("{",)

    def extract(self, text: str) -> Extracted | None:
        body = text.removeprefix(_PYTHON_TAG)
        found = _json_calls(body)
        if found is not None:
            return found
        calls = python_calls(body) if text.startswith(_PYTHON_TAG) else None
        return ("", calls) if calls else None
