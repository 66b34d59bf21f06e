"""A request's prompt text: the served template, the manifest's system prompt and preset messages (Ollama SYSTEM
and MESSAGE), and the request's own messages or prompt."""

from __future__ import annotations

from collections.abc import Sequence

from slm_runtime.prompts.base import ChatMessage, PromptTemplate
from slm_runtime.prompts.templates import OllamaTemplate
from slm_runtime.settings import ModelSettings
from slm_runtime.tools.types import ToolFunction

__all__ = ["PromptBuilder"]


class PromptBuilder:
    """Renders chats and generate prompts with the served template and the model settings' defaults."""

    def __init__(self, template: PromptTemplate, model: ModelSettings) -> None:
        self.template = template
        self._system = model.system
        self._preset = tuple(ChatMessage(m.role, m.content) for m in model.messages)

    def chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = (), *, think: bool | str | None = None
    ) -> str:
        """The prompt of a chat: the default system prompt (unless a message is a system one), the preset
        messages, then the request's messages; ``tools`` and ``think`` go to the template."""
        chat = [*self._preset, *messages]
        if self._system and not any(m.role == "system" for m in chat):
            chat = [ChatMessage("system", self._system), *chat]
        return self.template.render_chat(chat, tools, think=think)

    def generate(
        self, prompt: str, system: str | None, template: str | None, raw: bool, *, first_turn: bool = True
    ) -> str:
        """The prompt of a generate request. As in Ollama, a first turn (no ``context`` carried over) gets the
        preset messages between the system prompt and the prompt; a raw request gets its text unchanged."""
        if raw:
            return prompt
        chosen: PromptTemplate = OllamaTemplate(template) if template else self.template
        system = system if system is not None else self._system
        if first_turn and self._preset:
            head = [ChatMessage("system", system)] if system else []
            return chosen.render_chat([*head, *self._preset, ChatMessage("user", prompt)])
        return chosen.render_generate(prompt, system)

    def generate_stops(self, template: str | None, raw: bool) -> tuple[str, ...]:
        """The stop sequences the served template adds to a generate request (none with its own template or raw)."""
        if raw or template:
            return ()
        return self.template.stop
