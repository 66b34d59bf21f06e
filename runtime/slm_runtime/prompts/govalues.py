"""The values an Ollama TEMPLATE sees, shaped and printed as Ollama's Go values are.

Go templates reach fields by their Go names (``.Function.Name``, ``.ToolCalls``, ``.Function.Parameters.Properties``)
and print values with ``fmt``: a type with a ``String()`` method prints that. Ollama gives its tool types such
methods, so ``{{ .Function }}``, ``{{ . }}`` over ``.Tools``, ``{{ $.Tools }}`` and ``{{ .Function.Arguments }}``
print compact JSON (Go's ``encoding/json``: no spaces, ``<``, ``>`` and ``&`` escaped). :func:`go_print` is the
template's ``finalize``: it prints those as Go would, and booleans, nil, slices and maps in ``fmt``'s way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from slm_runtime.prompts.base import ChatMessage
from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["GoMap", "GoStruct", "GoTools", "go_json", "go_print", "go_range_pairs", "go_range_values", "go_values"]


def go_json(value: Any) -> str:
    """``value`` as Go's ``json.Marshal`` writes it (the template function ``json`` and ``String()`` methods)."""
    if isinstance(value, GoStruct):
        value = value.json_value()
    elif isinstance(value, list):
        value = [item.json_value() if isinstance(item, GoStruct) else item for item in value]
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=_json_default)
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def _json_default(value: Any) -> Any:
    if isinstance(value, GoStruct):
        return value.json_value()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _go_number(value: float) -> str:
    if math.isfinite(value) and value == int(value) and abs(value) < 1e21:
        return str(int(value))  # Go's %v prints 3.0 as 3
    return repr(value)


def go_print(value: Any) -> str:
    """How ``{{ value }}`` prints in a Go template (``fmt.Sprint``, or the type's ``String()`` method)."""
    if isinstance(value, GoStruct | GoStringList | GoMap | GoTools):
        return value.go_string()
    if isinstance(value, str):
        return value
    if value is None:
        return ""  # where Go would print "<no value>" or "<nil>": no real template prints a missing value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_number(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(item) for item in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{go_print(k)}:{go_print(value[k])}" for k in sorted(value, key=str)) + "]"
    return str(value)


def go_range_values(value: Any) -> list[Any]:
    """What ``range`` with one variable walks: a slice's items, a map's values (in key order for a plain map)."""
    if isinstance(value, GoMap):
        return list(value.values())
    if isinstance(value, dict):
        return [value[key] for key in sorted(value, key=str)]
    if not value:
        return []
    return list(value)


def go_range_pairs(value: Any) -> list[tuple[Any, Any]]:
    """What ``range $k, $v :=`` walks: (index, item) of a slice, (key, value) of a map."""
    if isinstance(value, GoMap):
        return list(value.items())
    if isinstance(value, dict):
        return [(key, value[key]) for key in sorted(value, key=str)]
    if not value:
        return []
    return list(enumerate(value))


class GoMap(dict[str, Any]):
    """A map whose keys keep their order (Ollama keeps tool properties and call arguments as they came); its
    ``String()`` prints JSON, as Ollama's argument type does."""

    def go_string(self) -> str:
        return go_json(dict(self))


class GoStringList(list[str]):
    """Ollama's ``PropertyType``: a list of type names that prints as the single name when there is one."""

    def go_string(self) -> str:
        return self[0] if len(self) == 1 else "[" + " ".join(self) + "]"


class GoStruct:
    """A Go struct: fields by their Go names; prints as JSON when the Go type has a JSON ``String()`` method."""

    def __init__(self, fields: dict[str, Any], json_value: Any = None, *, stringer: bool = False) -> None:
        self._fields = fields
        self._json = json_value
        self._stringer = stringer

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["_fields"][name]
        except KeyError:
            raise AttributeError(name) from None

    def __bool__(self) -> bool:
        return True  # a Go struct value is never empty in a template's if

    def json_value(self) -> Any:
        return self._json

    def go_string(self) -> str:
        if self._stringer:
            return go_json(self._json)
        return "{" + " ".join(go_print(value) for value in self._fields.values()) + "}"


_PARAMETERS_ORDER = ("type", "$defs", "items", "required", "properties")
_PROPERTY_ORDER = ("type", "items", "description", "enum", "properties")


def _go_ordered(schema: Any, order: tuple[str, ...]) -> Any:
    """A schema object with the keys Ollama's Go types know first, in their struct order (``json.Marshal`` writes
    struct fields in that order, whatever order the client sent); keys Ollama's types do not have (it drops them)
    are kept after those, for the model's benefit."""
    if not isinstance(schema, dict):
        return schema
    ordered = {key: schema[key] for key in order if key in schema}
    ordered.update((key, value) for key, value in schema.items() if key not in ordered)
    if isinstance(ordered.get("properties"), dict):
        ordered["properties"] = {k: _go_ordered(v, _PROPERTY_ORDER) for k, v in ordered["properties"].items()}
    if isinstance(ordered.get("items"), dict):
        ordered["items"] = _go_ordered(ordered["items"], _PROPERTY_ORDER)
    return ordered


def _property(schema: Any) -> Any:
    if not isinstance(schema, dict):
        return schema
    kind = schema.get("type")
    fields = {
        "Type": GoStringList([kind] if isinstance(kind, str) else list(kind or [])),
        "Items": schema.get("items"),
        "Description": schema.get("description", ""),
        "Enum": schema.get("enum"),
        "Properties": GoMap({k: _property(v) for k, v in (schema.get("properties") or {}).items()}),
    }
    return GoStruct(fields, _go_ordered(schema, _PROPERTY_ORDER))


def _tool(tool: ToolFunction) -> GoStruct:
    parameters = _go_ordered(tool.parameters or {}, _PARAMETERS_ORDER)
    params = GoStruct(
        {
            "Type": parameters.get("type", "object"),
            "Defs": parameters.get("$defs"),
            "Items": parameters.get("items"),
            "Required": list(parameters.get("required") or []),
            "Properties": GoMap({k: _property(v) for k, v in (parameters.get("properties") or {}).items()}),
        },
        parameters,
    )
    function_json = {"name": tool.name, "description": tool.description, "parameters": parameters}
    function = GoStruct(
        {"Name": tool.name, "Description": tool.description, "Parameters": params}, function_json, stringer=True
    )
    return GoStruct(
        {"Type": "function", "Items": None, "Function": function},
        {"type": "function", "function": function_json},
        stringer=True,
    )


class GoTools(list[GoStruct]):
    """Ollama's ``Tools``: a slice whose ``String()`` prints the JSON array."""

    def go_string(self) -> str:
        return go_json(list(self))


def _call(call: ToolCall, index: int) -> GoStruct:
    arguments = GoMap(call.arguments)
    function = GoStruct({"Index": index, "Name": call.name, "Arguments": arguments})
    return GoStruct({"ID": call.id, "Function": function})


def _message(message: ChatMessage) -> GoStruct:
    return GoStruct(
        {
            "Role": message.role,
            "Content": message.content,
            "Thinking": message.thinking,
            "Images": [],
            "ToolCalls": [_call(call, index) for index, call in enumerate(message.tool_calls)],
            "ToolName": message.tool_name,
            "ToolCallID": message.tool_call_id,
        }
    )


def go_values(
    messages: Sequence[ChatMessage], tools: Sequence[ToolFunction], think: bool | str | None, **values: Any
) -> dict[str, Any]:
    """The root values of a chat rendering, as Ollama's ``template.Execute`` passes them."""
    root: dict[str, Any] = {
        "System": "",
        "Prompt": "",
        "Response": "",
        "Suffix": "",
        "Messages": [_message(message) for message in messages],
        "Tools": GoTools(_tool(tool) for tool in tools),
        "Think": bool(think),
        "IsThinkSet": think is not None,
        "ThinkLevel": think if isinstance(think, str) else "",
    }
    root.update(values)
    return root
