"""Which family's parser fits a template: read from the template's own text (Jinja or Ollama Go), as llama.cpp
and Ollama pick their parsers from the template."""

from __future__ import annotations

from collections.abc import Callable

from slm_runtime.tools.parsers.base import ToolCallParser
from slm_runtime.tools.parsers.gemma import FunctionGemmaParser, GemmaToolCodeParser
from slm_runtime.tools.parsers.generic import GenericParser
from slm_runtime.tools.parsers.llama import Llama3Parser
from slm_runtime.tools.parsers.mistral import MistralParser
from slm_runtime.tools.parsers.tagged import HermesParser, Phi4MiniParser

__all__ = ["parser_class_for", "parser_for"]


def _is_llama3(source: str) -> bool:
    if "<|python_tag|>" in source:
        return True
    return "<|start_header_id|>" in source and ("ipython" in source or "tools" in source.lower())


_FAMILIES: tuple[tuple[Callable[[str], bool], type[ToolCallParser]], ...] = (
    (lambda s: "<start_function_call>" in s or "<start_function_declaration>" in s, FunctionGemmaParser),
    (lambda s: "[TOOL_CALLS]" in s, MistralParser),
    (lambda s: "<|tool_call|>" in s or "<|tool|>" in s, Phi4MiniParser),
    (lambda s: "<tool_call>" in s, HermesParser),
    (lambda s: "tool_code" in s, GemmaToolCodeParser),
    (_is_llama3, Llama3Parser),
)


def parser_class_for(template_source: str) -> type[ToolCallParser]:
    """The parser class of the template's family; :class:`GenericParser` when it shows no tool syntax."""
    for matches, parser in _FAMILIES:
        if matches(template_source):
            return parser
    return GenericParser


def parser_for(template_source: str) -> ToolCallParser:
    """A fresh parser (they keep per-reply state) for replies of a model served with this template."""
    return parser_class_for(template_source)()
