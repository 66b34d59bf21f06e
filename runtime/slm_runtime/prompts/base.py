"""The types every prompt template shares: a chat message, the template protocol and its error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["ChatMessage", "PromptTemplate", "TemplateError"]


class TemplateError(ValueError):
    """A template that cannot be translated or rendered; the message says where."""


@dataclass(frozen=True)
class ChatMessage:
    """One message of a chat. ``tool_calls``: the calls an assistant message made; ``tool_name`` and
    ``tool_call_id``: which call a ``tool`` message answers; ``thinking``: an assistant's reasoning text."""

    role: str
    content: str
    tool_calls: tuple[ToolCall, ...] = ()
    tool_name: str = ""
    tool_call_id: str = ""
    thinking: str = ""


class PromptTemplate(Protocol):
    """Turns a chat or a generate request into prompt text."""

    @property
    def source(self) -> str:
        """The template text as reported by /api/show ("" for the default)."""
        ...

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop sequences this format needs (added to the request's own)."""
        ...

    @property
    def supports_system_role(self) -> bool:
        """Whether the template shows system text itself (in a system turn, or merged into the first user turn
        as Gemma's does); where not, it is put into the first user message."""
        ...

    @property
    def supports_tools(self) -> bool:
        """Whether the template shows the offered tools; where not, they are described in the system message."""
        ...

    @property
    def supports_tool_calls(self) -> bool:
        """Whether the template shows an assistant's earlier calls; where not, they are written into its content."""
        ...

    @property
    def supports_tool_responses(self) -> bool:
        """Whether the template shows tool results; where not, they become user messages naming the tool."""
        ...

    @property
    def supports_thinking(self) -> bool:
        """Whether the template reacts to ``think`` or shows an assistant's earlier reasoning."""
        ...

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = (), *, think: bool | str | None = None
    ) -> str:
        """The prompt of a chat, ending with the generation prompt; ``tools`` are shown the template's way, and
        ``think`` (None: not asked; a bool; or a reasoning level, "low", "medium" or "high") is passed to
        templates that take it."""
        ...

    def render_generate(self, prompt: str, system: str | None) -> str: ...
