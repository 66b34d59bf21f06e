"""Families whose calls sit between tags: Qwen 2.5/3 and Hermes (``<tool_call>{json}</tool_call>``, one block per
call, or Qwen3-Coder's ``<function=name><parameter=key>value</parameter></function>`` inside the same tags) and
Phi-4-mini (``<|tool_call|>[{json}, ...]<|/tool_call|>``).

A block that does not parse stays in the content; a last block whose closing tag never came (the reply ended, or
the model stopped at it) is read to the end of the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from slm_runtime.tools.parsers.base import Extracted, ToolCallParser
from slm_runtime.tools.parsers.values import calls_from_value, json_values, loads_lenient
from slm_runtime.tools.types import ToolCall

__all__ = ["HermesParser", "Phi4MiniParser", "split_tagged"]


def split_tagged(text: str, open_tag: str, close_tag: str) -> list[tuple[str, str]]:
    """``text`` cut into ``("text", ...)`` and ``("block", body)`` pieces; a block's raw text is ``open_tag +
    body + close_tag`` (no close tag for an unterminated last block: its body runs to the end)."""
    pieces: list[tuple[str, str]] = []
    pos = 0
    while (start := text.find(open_tag, pos)) >= 0:
        pieces.append(("text", text[pos:start]))
        body_start = start + len(open_tag)
        end = text.find(close_tag, body_start)
        if end < 0:
            pieces.append(("open-block", text[body_start:]))
            return pieces
        pieces.append(("block", text[body_start:end]))
        pos = end + len(close_tag)
    pieces.append(("text", text[pos:]))
    return pieces


def _extract_blocks(
    text: str, open_tag: str, close_tag: str, read: Callable[[str], list[ToolCall] | None]
) -> Extracted | None:
    content: list[str] = []
    calls: list[ToolCall] = []
    for kind, body in split_tagged(text, open_tag, close_tag):
        if kind == "text":
            content.append(body)
            continue
        found = read(body)
        if found:
            calls.extend(found)
        else:
            content.append(open_tag + body + (close_tag if kind == "block" else ""))
    if not calls:
        return None
    return "".join(content).strip(), calls


def _json_calls(body: str) -> list[ToolCall] | None:
    """The calls of a block: one JSON call or list of calls, or several one after another (Ollama's Qwen
    templates put every call of a turn in one block, a line each); a cut-off or brace-dropping block repaired."""
    values, end = json_values(body)
    if values and not body[end:].strip():
        calls: list[ToolCall] = []
        for value in values:
            found = calls_from_value(value)
            if found is None:
                return None
            calls.extend(found)
        return calls
    try:
        return calls_from_value(loads_lenient(body.strip()))
    except ValueError:
        return None


_XML_FUNCTION = re.compile(r"<function=(?P<name>[^>\n]+)>(?P<body>.*?)(?:</function>|$)", re.DOTALL)
_XML_PARAMETER = re.compile(r"<parameter=(?P<key>[^>\n]+)>\n?(?P<value>.*?)\n?</parameter>", re.DOTALL)


def _xml_value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _hermes_body(body: str) -> list[ToolCall] | None:
    body = body.strip()
    if body.startswith("<function="):
        calls = [
            ToolCall(
                match["name"].strip(),
                {p["key"].strip(): _xml_value(p["value"]) for p in _XML_PARAMETER.finditer(match["body"])},
            )
            for match in _XML_FUNCTION.finditer(body)
        ]
        return calls or None
    return _json_calls(body)


class HermesParser(ToolCallParser):
    """Qwen 2.5, Qwen 3, Qwen3-Coder and Hermes: ``<tool_call>`` blocks, anywhere in the reply."""

    family = "hermes"
    anywhere = ("<tool_call>",)

    def extract(self, text: str) -> Extracted | None:
        return _extract_blocks(text, "<tool_call>", "</tool_call>", _hermes_body)


class Phi4MiniParser(ToolCallParser):
    """Phi-4-mini: ``<|tool_call|>`` followed by a JSON list of calls (or one call), up to ``<|/tool_call|>``."""

    family = "phi4-mini"
    anywhere = ("<|tool_call|>",)

    def extract(self, text: str) -> Extracted | None:
        return _extract_blocks(text, "<|tool_call|>", "<|/tool_call|>", _json_calls)
