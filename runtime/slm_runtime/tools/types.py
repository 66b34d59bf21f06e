"""The value types of tool calling, shared by both APIs, the prompt templates, the grammar and the parsers.

Each API converts its own wire shapes into these (OpenAI: ``tools[].function``, ``tool_choice``,
``parallel_tool_calls``, ``tool_calls[].function.arguments`` as a JSON string; Ollama: ``tools[].function``,
``tool_calls[].function.arguments`` as an object) and back; nothing below the APIs sees a wire shape.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["ToolCall", "ToolChoice", "ToolChoiceMode", "ToolFunction", "new_call_id"]

ToolChoiceMode = Literal["none", "auto", "required", "function"]


def new_call_id() -> str:
    """A fresh tool call id in OpenAI's shape (``call_`` and 24 hex digits)."""
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass(frozen=True)
class ToolFunction:
    """A function the model may call: its name, what it does, and a JSON schema of its arguments (an object)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=lambda: {"type": "object", "properties": {}})

    def as_template_value(self) -> dict[str, Any]:
        """The shape chat templates (Hugging Face ``tools``, Ollama ``.Tools``) iterate over."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters},
        }


@dataclass(frozen=True)
class ToolCall:
    """One call the model made (or made earlier, in a history): the function's name and its arguments."""

    name: str
    arguments: dict[str, Any]
    id: str = field(default_factory=new_call_id)

    def as_template_value(self) -> dict[str, Any]:
        """The shape chat templates iterate over (``message.tool_calls``, Ollama ``.ToolCalls``)."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolChoice:
    """What the request allows: ``none`` (no call, tools still shown unless the API says otherwise), ``auto`` (the
    model decides; calls are parsed from its text), ``required`` (at least one call, grammar-constrained) or
    ``function`` (a call of ``function``, grammar-constrained). ``parallel``: more than one call per turn."""

    mode: ToolChoiceMode = "auto"
    function: str | None = None
    parallel: bool = True
