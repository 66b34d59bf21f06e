"""Reading call values out of model text: JSON (with the repairs small models need), call objects in the shapes
templates use, and Python-style calls (``get_weather(city="Paris")``).

Every reader returns ``None`` for text that is not what it reads; the family parsers then keep that text as
content, so nothing a model wrote is lost.
"""

from __future__ import annotations

import ast
import json
from typing import Any

from slm_runtime.tools.types import ToolCall

__all__ = ["call_from_value", "calls_from_value", "json_prefix", "json_values", "loads_lenient", "python_calls"]

_DECODER = json.JSONDecoder()
_CLOSERS = {"{": "}", "[": "]"}


def _close_brackets(text: str) -> str:
    """``text`` with the closing brackets it lacks: before a closer that skips open ones (Ollama's phi4-mini
    template writes ``[{"name":..,"arguments":{..}]``, dropping a ``}``) and at the end (a cut-off call)."""
    out: list[str] = []
    stack: list[str] = []
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
            out.append(char)
            continue
        if char == '"':
            in_string = True
        elif char in _CLOSERS:
            stack.append(_CLOSERS[char])
        elif char in "}]" and stack:
            while stack and stack[-1] != char and char in stack:
                out.append(stack.pop())
            if stack and stack[-1] == char:
                stack.pop()
        out.append(char)
    if in_string:
        out.append('"')
    out.extend(reversed(stack))
    return "".join(out)


def loads_lenient(text: str) -> Any:
    """The JSON value of ``text``, repairing missing closing brackets; ValueError if it still does not parse."""
    try:
        return json.loads(text)
    except ValueError:
        return json.loads(_close_brackets(text))


def json_prefix(text: str, start: int = 0) -> tuple[Any, int] | None:
    """The JSON value that begins at ``start`` (after white space) and the offset just past it, or None."""
    while start < len(text) and text[start].isspace():
        start += 1
    try:
        return _DECODER.raw_decode(text, start)
    except ValueError:
        return None


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _json_value(text: str, start: int, separators: str) -> tuple[Any, int] | None:
    parsed = json_prefix(text, start)
    if parsed is not None:
        return parsed
    if start < len(text) and text[start] == "[":  # an array whose items lack commas
        items, end = json_values(text, start + 1, separators)
        close = _skip_space(text, end)
        if close < len(text) and text[close] == "]":
            return items, close + 1
    return None


def json_values(text: str, start: int = 0, separators: str = ",;") -> tuple[list[Any], int]:
    """The JSON values from ``start`` on, one after another with white space or one of ``separators`` between
    them, and the offset after the last one read. An array is read the same way, so ``[{..}{..}]`` (Ollama's
    mistral template leaves out the commas between calls) reads as ``[{..}, {..}]``."""
    values: list[Any] = []
    pos = start
    while (found := _json_value(text, _skip_space(text, pos), separators)) is not None:
        values.append(found[0])
        pos = found[1]
        after = _skip_space(text, pos)
        if after < len(text) and text[after] in separators:
            pos = after + 1
    return values, pos


def call_from_value(value: Any) -> ToolCall | None:
    """A call written as an object: ``{"name", "arguments"}`` (Qwen, Mistral, the generic shape), ``{"name",
    "parameters"}`` (Llama 3), or OpenAI's ``{"type": "function", "function": {...}}``; arguments may be an object
    or a JSON string of one. None for anything else (an object with only a ``name`` is not taken for a call)."""
    if not isinstance(value, dict):
        return None
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return None
    if "arguments" in value:
        arguments = value["arguments"]
    elif "parameters" in value:
        arguments = value["parameters"]
    else:
        return None
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except ValueError:
            return None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return None
    return ToolCall(name, arguments)


def calls_from_value(value: Any) -> list[ToolCall] | None:
    """One call object or a list of them; None unless every item is a call."""
    items = value if isinstance(value, list) else [value]
    calls = [call_from_value(item) for item in items]
    if not calls or any(call is None for call in calls):
        return None
    return [call for call in calls if call is not None]


# --- Python-style calls ---------------------------------------------------------------------------------------

_NAMED_CONSTANTS = {"true": True, "false": False, "null": None, "True": True, "False": False, "None": None}


class _NotACallError(Exception):
    """The expression is not a call with literal keyword arguments."""


def _literal(node: ast.expr) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in _NAMED_CONSTANTS:
        return _NAMED_CONSTANTS[node.id]
    if isinstance(node, ast.List | ast.Tuple):
        return [_literal(item) for item in node.elts]
    if isinstance(node, ast.Dict):
        if any(key is None for key in node.keys):
            raise _NotACallError
        return {_literal(key): _literal(value) for key, value in zip(node.keys, node.values, strict=True) if key}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _literal(node.operand)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    raise _NotACallError


def _dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    raise _NotACallError


def _python_call(node: ast.expr) -> ToolCall:
    if not isinstance(node, ast.Call):
        raise _NotACallError
    name = _dotted(node.func)
    if name == "print" and len(node.args) == 1 and not node.keywords:
        return _python_call(node.args[0])  # Gemma's tool_code examples wrap calls in print()
    if node.args or any(keyword.arg is None for keyword in node.keywords):
        raise _NotACallError  # positional arguments cannot be named without the schema
    name = name.removeprefix("default_api.").removesuffix(".call")  # Gemini's prefix; Llama's builtin-tool form
    return ToolCall(name, {str(keyword.arg): _literal(keyword.value) for keyword in node.keywords})


def python_calls(code: str) -> list[ToolCall] | None:
    """The calls in Python-style text: one call per line, or a list of calls (``[f(a=1), g(b="x")]``), with
    literal keyword arguments; None if the text is anything else."""
    try:
        tree = ast.parse(code.strip())
    except (SyntaxError, ValueError):
        return None
    calls: list[ToolCall] = []
    try:
        for statement in tree.body:
            if not isinstance(statement, ast.Expr):
                return None
            value = statement.value
            items = value.elts if isinstance(value, ast.List | ast.Tuple) else [value]
            calls.extend(_python_call(item) for item in items)
    except _NotACallError:
        return None
    return calls or None
