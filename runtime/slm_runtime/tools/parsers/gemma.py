"""Gemma's two call styles.

- Gemma 3 (no tool tokens; Google's guide prompts for it): Python-style calls, either as a list at the start of the
  reply, ``[get_weather(city="Paris"), get_time(zone="CET")]``, or in a fenced block, ```` ```tool_code ````
  then ``get_weather(city="Paris")`` (``print(...)`` around the call is accepted) then ```` ``` ````.
- FunctionGemma: ``<start_function_call>call:get_weather{city:<escape>Paris<escape>,days:3}<end_function_call>``,
  strings between ``<escape>`` tokens, numbers, booleans, nested ``{...}`` and ``[...]`` bare.
"""

from __future__ import annotations

import re
from typing import Any

from slm_runtime.tools.parsers.base import Extracted, ToolCallParser
from slm_runtime.tools.parsers.tagged import split_tagged
from slm_runtime.tools.parsers.values import python_calls
from slm_runtime.tools.types import ToolCall

__all__ = ["FunctionGemmaParser", "GemmaToolCodeParser"]

_TOOL_CODE = "```tool_code"


class GemmaToolCodeParser(ToolCallParser):
    """Gemma 3's Python-style calls: a ```` ```tool_code ```` block anywhere, or a call list opening the reply."""

    family = "gemma-tool-code"
    anywhere = (_TOOL_CODE,)
    leading = ("[",)

    def extract(self, text: str) -> Extracted | None:
        if not text.startswith(_TOOL_CODE):
            calls = python_calls(text)
            return ("", calls) if calls else None
        content: list[str] = []
        found: list[ToolCall] = []
        for kind, body in split_tagged(text, _TOOL_CODE, "```"):
            calls = python_calls(body) if kind != "text" else None
            if calls:
                found.extend(calls)
            elif kind == "text":
                content.append(body)
            else:
                content.append(_TOOL_CODE + body + ("```" if kind == "block" else ""))
        return ("".join(content).strip(), found) if found else None


_ESCAPE = "<escape>"
_BARE_END = re.compile(r"[,}\]]")


class _MalformedError(Exception):
    """Not FunctionGemma's argument syntax."""


class _Reader:
    """Reads FunctionGemma's argument syntax: JSON-like, keys bare, strings between ``<escape>`` tokens."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def take(self, literal: str) -> bool:
        self.skip_space()
        if self.text.startswith(literal, self.pos):
            self.pos += len(literal)
            return True
        return False

    def escaped(self) -> str:
        end = self.text.find(_ESCAPE, self.pos)
        if end < 0:
            raise _MalformedError
        value = self.text[self.pos : end]
        self.pos = end + len(_ESCAPE)
        return value

    def value(self) -> Any:
        if self.take(_ESCAPE):
            return self.escaped()
        if self.take("{"):
            return self.mapping()
        if self.take("["):
            items: list[Any] = []
            while not self.take("]"):
                items.append(self.value())
                if not self.take(","):
                    if not self.take("]"):
                        raise _MalformedError
                    break
            return items
        match = _BARE_END.search(self.text, self.pos)
        end = match.start() if match else len(self.text)
        word = self.text[self.pos : end].strip()
        self.pos = end
        return _bare(word)

    def mapping(self) -> dict[str, Any]:
        """The members after an opening brace, up to and including the closing one."""
        result: dict[str, Any] = {}
        if self.take("}"):
            return result
        while True:
            if self.take(_ESCAPE):
                key = self.escaped()
            else:
                colon = self.text.find(":", self.pos)
                if colon < 0:
                    raise _MalformedError
                key = self.text[self.pos : colon].strip()
                self.pos = colon
            if not key or not self.take(":"):
                raise _MalformedError
            result[key] = self.value()
            if self.take("}"):
                return result
            if not self.take(","):
                raise _MalformedError


def _bare(word: str) -> Any:
    if word in {"true", "false"}:
        return word == "true"
    if word == "null":
        return None
    for kind in (int, float):
        try:
            return kind(word)
        except ValueError:
            pass
    if not word:
        raise _MalformedError
    return word


_CALL = re.compile(r"\s*call:(?P<name>[^{\s]+)\s*\{")


def _function_gemma_call(body: str) -> list[ToolCall] | None:
    match = _CALL.match(body)
    if match is None:
        return None
    reader = _Reader(body)
    reader.pos = match.end()
    try:
        arguments = reader.mapping()
    except _MalformedError:
        return None
    reader.skip_space()
    return [ToolCall(match["name"], arguments)] if reader.pos == len(body) else None


class FunctionGemmaParser(ToolCallParser):
    """FunctionGemma: ``<start_function_call>call:name{...}<end_function_call>``, anywhere in the reply."""

    family = "functiongemma"
    anywhere = ("<start_function_call>",)

    def extract(self, text: str) -> Extracted | None:
        content: list[str] = []
        calls: list[ToolCall] = []
        for kind, body in split_tagged(text, "<start_function_call>", "<end_function_call>"):
            found = _function_gemma_call(body) if kind != "text" else None
            if found:
                calls.extend(found)
            elif kind == "text":
                content.append(body)
            else:
                content.append("<start_function_call>" + body + ("<end_function_call>" if kind == "block" else ""))
        return ("".join(content).strip(), calls) if calls else None
