"""Finding tool calls in a model's free text (``tool_choice: auto``), while it streams.

:func:`parser_for` picks the family from the template's text; the parser's ``feed`` returns the text that is
certainly content and ``finish`` the rest of the content and the calls. Families:

- ``hermes``: Qwen 2.5/3, Qwen3-Coder, Hermes, ``<tool_call>{json}</tool_call>`` (:mod:`.tagged`)
- ``phi4-mini``: ``<|tool_call|>[...]<|/tool_call|>`` (:mod:`.tagged`)
- ``mistral``: ``[TOOL_CALLS][...]`` and ``[TOOL_CALLS]name[ARGS]{...}`` (:mod:`.mistral`)
- ``llama3``: a bare ``{"name", "parameters"}`` reply, ``<|python_tag|>`` (:mod:`.llama`)
- ``gemma-tool-code``, ``functiongemma`` (:mod:`.gemma`)
- ``generic``: the JSON shape the prompt asks for when the template has no tool syntax (:mod:`.generic`); every
  family also accepts it at the start of a reply.
"""

from __future__ import annotations

from slm_runtime.tools.parsers.base import ToolCallParser
from slm_runtime.tools.parsers.detect import parser_class_for, parser_for
from slm_runtime.tools.parsers.gemma import FunctionGemmaParser, GemmaToolCodeParser
from slm_runtime.tools.parsers.generic import GenericParser
from slm_runtime.tools.parsers.llama import Llama3Parser
from slm_runtime.tools.parsers.mistral import MistralParser
from slm_runtime.tools.parsers.tagged import HermesParser, Phi4MiniParser

__all__ = [
    "FunctionGemmaParser",
    "GemmaToolCodeParser",
    "GenericParser",
    "HermesParser",
    "Llama3Parser",
    "MistralParser",
    "Phi4MiniParser",
    "ToolCallParser",
    "parser_class_for",
    "parser_for",
]
