"""Tool calling, API-neutral: the tools a chat offers, the calls a model makes, how the prompt shows them, the
grammar that forces a call, and the parsers that find calls in a model's free text.

- :mod:`~slm_runtime.tools.types`: ToolFunction, ToolCall, ToolChoice (the contract both APIs and the prompt
  templates share).
"""

from __future__ import annotations

from slm_runtime.tools.types import ToolCall, ToolChoice, ToolChoiceMode, ToolFunction, new_call_id

__all__ = ["ToolCall", "ToolChoice", "ToolChoiceMode", "ToolFunction", "new_call_id"]
