"""The JSON-schema grammar's string characters: llama-cpp-python's converter lets raw control characters into a
string, which a JSON parser refuses; the engine puts JSON's own rule in its place."""

from __future__ import annotations

import json

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from slm_runtime.engines.llama_cpp import JSON_STRING_CHAR, strict_json_strings

SCHEMA = {"type": "object", "properties": {"subject": {"type": "string"}}, "required": ["subject"]}


def test_the_converter_s_char_rule_is_replaced_by_json_s_and_nothing_else_changes() -> None:
    converted = json_schema_to_gbnf(json.dumps(SCHEMA))
    fixed = strict_json_strings(converted)
    before, after = converted.splitlines(), fixed.splitlines()
    changed = [(old, new) for old, new in zip(before, after, strict=True) if old != new]
    assert changed == [(next(line for line in before if line.startswith("char ::= ")), JSON_STRING_CHAR)]


def test_json_s_rule_refuses_exactly_what_the_json_grammar_refuses() -> None:
    # The class of characters a string takes unescaped, as in llama-cpp-python's own JSON grammar (format: json).
    assert r'[^"\\\x7F\x00-\x1F]' in JSON_GBNF
    assert JSON_STRING_CHAR.startswith(r'char ::= [^"\\\x7F\x00-\x1F] | "\\" ')
