"""Where a forced tool call's parts are in its JSON text while it is still being generated.

A grammar-constrained call is JSON: ``{"name": ..., "arguments": {...}}``, or an array of such objects for parallel
calls (or an object holding them under ``tool_calls``). :func:`scan_calls` reads any prefix of that text and says,
for each call begun so far, its name once the name's string is complete and where its ``arguments`` value starts
and (once complete) ends, so that a stream can send the name first and then the arguments' text as it grows. Pure:
the caller rescans the text it has so far.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

__all__ = ["CallSpan", "scan_calls"]

_SPACE = " \t\r\n"
_SCALAR_END = ",}]" + _SPACE


@dataclass(frozen=True)
class CallSpan:
    """One call in the text: ``name`` once complete; ``arguments_start``/``arguments_end``: offsets of the
    arguments value (the end once the value is complete)."""

    name: str | None = None
    arguments_start: int | None = None
    arguments_end: int | None = None


class _IncompleteError(Exception):
    """The text ends before the value being read."""


class _MalformedError(Exception):
    """The text is not a call (a grammar-constrained generation never gets here)."""


class _Reader:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        while self.pos < len(self.text) and self.text[self.pos] in _SPACE:
            self.pos += 1
        if self.pos >= len(self.text):
            raise _IncompleteError
        return self.text[self.pos]

    def expect(self, char: str) -> None:
        if self.peek() != char:
            raise _MalformedError
        self.pos += 1

    def string(self) -> str:
        if self.peek() != '"':
            raise _MalformedError
        start = self.pos
        self.pos += 1
        while True:
            if self.pos >= len(self.text):
                raise _IncompleteError
            char = self.text[self.pos]
            self.pos += 2 if char == "\\" else 1
            if char == '"':
                value: str = json.loads(self.text[start : self.pos])
                return value

    def skip_value(self) -> None:
        char = self.peek()
        if char == '"':
            self.string()
        elif char in "{[":
            self._skip_nested()
        else:
            while self.pos < len(self.text) and self.text[self.pos] not in _SCALAR_END:
                self.pos += 1
            if self.pos >= len(self.text):
                raise _IncompleteError  # a number or literal may go on

    def _skip_nested(self) -> None:
        depth = 0
        while True:
            if self.pos >= len(self.text):
                raise _IncompleteError
            char = self.text[self.pos]
            if char == '"':
                self.string()
                continue
            self.pos += 1
            if char in "{[":
                depth += 1
            elif char in "}]":
                depth -= 1
                if depth == 0:
                    return


class _Call:
    def __init__(self) -> None:
        self.name: str | None = None
        self.start: int | None = None
        self.end: int | None = None


def _read_object(reader: _Reader, calls: list[_Call]) -> None:
    """An object that is a call (``name``, ``arguments``), or that holds calls under ``tool_calls``."""
    call: _Call | None = None
    reader.expect("{")
    while True:
        char = reader.peek()
        if char == "}":
            reader.pos += 1
            return
        if char == ",":
            reader.pos += 1
            continue
        key = reader.string()
        reader.expect(":")
        if key == "tool_calls" and reader.peek() == "[":
            _read_array(reader, calls)
            continue
        if key in ("name", "arguments") and call is None:
            call = _Call()
            calls.append(call)
        if call is not None and key == "name" and reader.peek() == '"':
            call.name = reader.string()
        elif call is not None and key == "arguments":
            reader.peek()
            call.start = reader.pos
            reader.skip_value()
            call.end = reader.pos
        else:
            reader.skip_value()


def _read_array(reader: _Reader, calls: list[_Call]) -> None:
    reader.expect("[")
    while reader.peek() != "]":
        if reader.peek() == ",":
            reader.pos += 1
            continue
        _read_object(reader, calls)
    reader.pos += 1


def scan_calls(text: str) -> list[CallSpan]:
    """The calls begun in ``text``, a prefix of a forced call's JSON: a call object, an array of them, or an object
    holding them under ``tool_calls``."""
    calls: list[_Call] = []
    reader = _Reader(text)
    try:
        if reader.peek() == "[":
            _read_array(reader, calls)
        else:
            _read_object(reader, calls)
    except (_IncompleteError, _MalformedError):
        pass
    return [CallSpan(c.name, c.start, c.end) for c in calls]
