"""The types every prompt template shares: a chat message, the template protocol and its error."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["ChatMessage", "PromptTemplate", "TemplateCapabilities", "TemplateError"]


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


@dataclass(frozen=True)
class TemplateCapabilities:
    """What a template shows itself; what it lacks is polyfilled (:mod:`slm_runtime.prompts.polyfill`).

    - ``system_role``: system text (in a system turn, or merged into the first user turn as Gemma's does); where
      not, it is put into the first user message.
    - ``tools``: the offered tools; where not, they are described in the system message.
    - ``tool_calls``: an assistant's earlier calls; where not, they are written into its content.
    - ``tool_responses``: tool results; where not, they become user messages naming the tool.
    - ``thinking``: the template reacts to ``think`` or shows an assistant's earlier reasoning.
    - ``arguments_as_string``: the template shows a call's arguments only when given as a JSON string (DeepSeek
      R1's concatenates them), not as the object Hugging Face templates usually expect.
    """

    system_role: bool
    tools: bool
    tool_calls: bool
    tool_responses: bool
    thinking: bool
    arguments_as_string: bool = False


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
    def capabilities(self) -> TemplateCapabilities:
        """What the template shows itself (found by rendering probes); the rest is polyfilled."""
        ...

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = (), *, think: bool | str | None = None
    ) -> str:
        """The prompt of a chat, ending with the generation prompt; ``tools`` are shown the template's way, and
        ``think`` (None: not asked; a bool; or a reasoning level, "low", "medium" or "high") is passed to
        templates that take it."""
        ...

    def render_generate(self, prompt: str, system: str | None) -> str: ...
