"""Forced tool calls (``tool_choice`` ``required`` or a named function): a JSON schema whose every instance is a
valid call, for llama.cpp's JSON-schema grammar, and the reading of what the constrained generation wrote.

The schema of one call is ``{"name": {"const": <name>}, "arguments": <the tool's parameters schema>}``, both keys
required and no others; ``required`` with several tools is an ``anyOf`` of those; parallel calls are an array of
them with at least one item. Every construct this module adds (``const``, ``anyOf``, arrays with ``minItems``,
nested objects, ``$ref`` into ``$defs``) is one llama.cpp's converter turns into grammar rules; the tools' own
schemas are passed through, their ``$defs`` moved to the root (refs rewritten), where the converter resolves them.

Keywords of a tool's schema that the converter does not enforce (``minimum``, ``maximum``, ``multipleOf``,
``uniqueItems``...) are checked afterwards: :func:`parse_forced_calls` validates the arguments with
``jsonschema`` and refuses a call that does not match, with a message that names the tool and the failure.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from typing import Any

import jsonschema
import jsonschema.exceptions
import jsonschema.validators

from slm_runtime.tools.types import ToolCall, ToolChoice, ToolFunction

__all__ = ["forced_call_schema", "forced_tools", "parse_forced_calls"]

_DEF_KEYS = ("$defs", "definitions")


def forced_tools(tools: Sequence[ToolFunction], choice: ToolChoice) -> list[ToolFunction]:
    """The tools a forced choice allows: all of them (``required``) or the named one (``function``); ValueError
    for a choice that forces nothing, no tools, or a name that is not among them."""
    if choice.mode not in {"required", "function"}:
        raise ValueError(f"tool_choice {choice.mode!r} does not force a call")
    if not tools:
        raise ValueError(f"tool_choice {choice.mode!r} needs at least one tool")
    if choice.mode == "required":
        return list(tools)
    chosen = [tool for tool in tools if tool.name == choice.function]
    if not chosen:
        names = ", ".join(repr(tool.name) for tool in tools)
        raise ValueError(f"tool_choice names function {choice.function!r}, which is not one of the tools ({names})")
    return chosen[:1]


def _rewrite_refs(node: Any, prefix: str) -> tuple[Any, bool]:
    """``node`` with local refs pointed at the root's ``$defs`` under ``prefix``, and whether a ref points into the
    parameters schema itself (it is then added to ``$defs`` whole)."""
    if isinstance(node, list):
        items = [_rewrite_refs(item, prefix) for item in node]
        return [item for item, _ in items], any(used for _, used in items)
    if not isinstance(node, dict):
        return node, False
    out: dict[str, Any] = {}
    uses_self = False
    for key, value in node.items():
        if key == "$ref" and isinstance(value, str) and (value == "#" or value.startswith("#/")):
            pointer = value[1:]
            for def_key in _DEF_KEYS:
                if pointer.startswith(f"/{def_key}/"):
                    out[key] = f"#/$defs/{prefix}{pointer[len(def_key) + 2 :]}"
                    break
            else:
                out[key] = f"#/$defs/{prefix}parameters{pointer}"
                uses_self = True
            continue
        out[key], used = _rewrite_refs(value, prefix)
        uses_self = uses_self or used
    return out, uses_self


def _arguments_schema(tool: ToolFunction, prefix: str, defs: dict[str, Any]) -> dict[str, Any]:
    """The tool's parameters schema for the combined schema, its definitions moved into ``defs``."""
    parameters = copy.deepcopy(tool.parameters) or {"type": "object", "properties": {}}
    local_defs: dict[str, Any] = {}
    for def_key in _DEF_KEYS:
        local_defs.update(parameters.pop(def_key, None) or {})
    schema, uses_self = _rewrite_refs(parameters, prefix)
    for name, definition in local_defs.items():
        rewritten, used = _rewrite_refs(definition, prefix)
        uses_self = uses_self or used
        defs[f"{prefix}{name}"] = rewritten
    if uses_self:
        defs[f"{prefix}parameters"] = schema
    result: dict[str, Any] = schema
    return result


def forced_call_schema(tools: Sequence[ToolFunction], choice: ToolChoice) -> dict[str, Any]:
    """A JSON schema of the output a forced choice allows: one call object, or (``choice.parallel``) a non-empty
    array of them. Feed it to llama.cpp's JSON-schema grammar."""
    defs: dict[str, Any] = {}
    calls = [
        {
            "type": "object",
            "properties": {
                "name": {"const": tool.name},
                "arguments": _arguments_schema(tool, f"tool{index}-", defs),
            },
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for index, tool in enumerate(forced_tools(tools, choice))
    ]
    schema: dict[str, Any] = calls[0] if len(calls) == 1 else {"anyOf": calls}
    if choice.parallel:
        schema = {"type": "array", "items": schema, "minItems": 1}
    if defs:
        schema = {**schema, "$defs": defs}
    return schema


def _clip(text: str, size: int = 200) -> str:
    return text if len(text) <= size else text[:size] + "..."


def _check_arguments(tool: ToolFunction, arguments: dict[str, Any], where: str) -> None:
    schema = tool.parameters or {"type": "object"}
    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.exceptions.SchemaError as exc:
        raise ValueError(
            f"the parameters schema of tool {tool.name!r} is not a valid JSON schema: {exc.message}"
        ) from exc
    error = jsonschema.exceptions.best_match(validator_class(schema).iter_errors(arguments))
    if error is not None:
        at = "/".join(str(part) for part in error.absolute_path)
        place = f" at {at!r}" if at else ""
        raise ValueError(f"the arguments of {where} ({tool.name}) do not match its schema{place}: {error.message}")


def parse_forced_calls(text: str, tools: Sequence[ToolFunction], choice: ToolChoice) -> list[ToolCall]:
    """The calls in the output of a generation constrained by :func:`forced_call_schema`; ValueError, saying what
    is wrong, if it is not JSON, not in the call shape, names another function or its arguments do not validate
    against the tool's schema."""
    allowed = {tool.name: tool for tool in forced_tools(tools, choice)}
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"the forced tool call is not JSON ({exc}): {_clip(text)!r}") from exc
    if choice.parallel:
        if not isinstance(value, list) or not value:
            raise ValueError(f"the forced tool calls are not a non-empty JSON array: {_clip(text)!r}")
        items: list[Any] = value
    else:
        items = [value]
    calls: list[ToolCall] = []
    for index, item in enumerate(items):
        where = f"call {index}" if choice.parallel else "the call"
        if not isinstance(item, dict) or set(item) != {"name", "arguments"}:
            raise ValueError(f'{where} is not an object with exactly "name" and "arguments": {_clip(json.dumps(item))}')
        name, arguments = item["name"], item["arguments"]
        tool = allowed.get(name) if isinstance(name, str) else None
        if tool is None:
            raise ValueError(f"{where} names {name!r}, which is not one of the allowed tools ({', '.join(allowed)})")
        if not isinstance(arguments, dict):
            raise ValueError(f"the arguments of {where} ({name}) are not a JSON object: {_clip(json.dumps(arguments))}")
        _check_arguments(tool, arguments, where)
        calls.append(ToolCall(name, arguments))
    return calls
