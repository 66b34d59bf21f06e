"""Where a forced tool call's name and arguments are in any prefix of its JSON (slm_runtime.call_scan)."""

from __future__ import annotations

import pytest

from slm_runtime.call_scan import CallSpan, scan_calls


@pytest.mark.parametrize(
    ("text", "spans"),
    [
        ("", []),
        ('{"na', []),
        ('{"name": "f', [CallSpan()]),
        ('{"name": "f", "argu', [CallSpan("f")]),
        ('{"name": "f", "arguments": {"a": "}\\"', [CallSpan("f", 27)]),
        ('{"name": "f", "arguments": {"a": [1, {}]}}', [CallSpan("f", 27, 41)]),
        ('[{"arguments": {}, "name": "f"}, {"name": "g"', [CallSpan("f", 15, 17), CallSpan("g")]),
        ('{"tool_calls": [{"name": "f", "arguments": 1}]}', [CallSpan("f", 43, 44)]),
        ('{"name": "f", "arguments": 12', [CallSpan("f", 27)]),
    ],
)
def test_scan_calls_reads_any_prefix_of_a_forced_call(text: str, spans: list[CallSpan]) -> None:
    assert scan_calls(text) == spans
