"""Tool calling, API-neutral: the tools a chat offers, the calls a model makes, how the prompt shows them, the
grammar that forces a call, and the parsers that find calls in a model's free text.

- :mod:`~slm_runtime.tools.types`: ToolFunction, ToolCall, ToolChoice (the contract both APIs and the prompt
  templates share).
- :mod:`~slm_runtime.tools.generic`: the generic JSON call shape, for templates with no tool syntax of their own.
- :mod:`~slm_runtime.tools.grammar`: forced calls (``required``, a named function): the JSON schema for
  llama.cpp's grammar, and the reading and validation of the constrained output.
- :mod:`~slm_runtime.tools.parsers`: the parsers of the template families for ``auto``, streaming.

Only the types are imported here: the grammar brings ``jsonschema`` and the parsers are per-request objects, so
they are imported from their modules where used.
"""

from __future__ import annotations

from slm_runtime.tools.types import ToolCall, ToolChoice, ToolChoiceMode, ToolFunction, new_call_id

__all__ = ["ToolCall", "ToolChoice", "ToolChoiceMode", "ToolFunction", "new_call_id"]
