"""The types every prompt template shares: a chat message, the template protocol and its error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ChatMessage", "PromptTemplate", "TemplateError"]


class TemplateError(ValueError):
    """A template that cannot be translated or rendered; the message says where."""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


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

    def render_chat(self, messages: Sequence[ChatMessage]) -> str: ...

    def render_generate(self, prompt: str, system: str | None) -> str: ...
