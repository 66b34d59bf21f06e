"""Prompt templates: the model's own Jinja chat template, an Ollama (Go text/template) TEMPLATE, or a default.

Choice, first that applies (:func:`select_template`): the manifest/--template (Ollama syntax), else the chat
template inside the model (``tokenizer.chat_template``, Hugging Face Jinja), else :class:`DefaultTemplate`.

An Ollama TEMPLATE is translated to Jinja (:mod:`slm_runtime.prompts.gotemplate`, which lists the supported
forms) and rendered in a sandbox. A template that does not use ``.Messages`` is rendered once per
user/assistant turn, as Ollama does, and the last turn is cut at ``{{ .Response }}``. A template that cannot be
translated is refused at startup with a TemplateError.

The default (a model with neither) is a plain transcript that base models continue well::

    {system}\\n\\n            (only when there is a system prompt)
    User: {content}\\n          (each user turn)
    Assistant: {content}\\n     (each assistant turn)
    Assistant:                (the generation prompt; generation stops at "\\nUser:")
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import jinja2
import jinja2.sandbox

from slm_runtime.prompts.base import ChatMessage, PromptTemplate, TemplateError
from slm_runtime.prompts.gotemplate import translate_go_template
from slm_runtime.tools.types import ToolFunction

__all__ = [
    "DefaultTemplate",
    "JinjaChatTemplate",
    "OllamaTemplate",
    "select_template",
]


# --- the default -----------------------------------------------------------------------------------------


class DefaultTemplate:
    source = ""
    stop: tuple[str, ...] = ("\nUser:",)

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = ()) -> str:
        parts: list[str] = []
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if system:
            parts.append(system + "\n\n")
        for message in messages:
            if message.role == "user":
                parts.append(f"User: {message.content}\n")
            elif message.role == "assistant":
                parts.append(f"Assistant: {message.content}\n")
            elif message.role == "tool":
                parts.append(f"Tool: {message.content}\n")
        parts.append("Assistant:")
        return "".join(parts)

    def render_generate(self, prompt: str, system: str | None) -> str:
        return f"{system}\n\n{prompt}" if system else prompt


# --- the model's own Hugging Face Jinja template ----------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


class JinjaChatTemplate:
    stop: tuple[str, ...] = ()

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader()
        )
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the model's chat template line {exc.lineno}: {exc.message}") from exc
        self.source = source
        self._bos = bos_token
        self._eos = eos_token

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = ()) -> str:
        try:
            return self._template.render(
                messages=[{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template failed: {exc}") from exc

    def render_generate(self, prompt: str, system: str | None) -> str:
        messages = [ChatMessage("system", system)] if system else []
        return self.render_chat([*messages, ChatMessage("user", prompt)])


# --- Ollama Go templates, translated to Jinja -----------------------------------------------------------

_RESPONSE_MARK = "\x00slm-response\x00"


class OllamaTemplate:
    stop: tuple[str, ...] = ()

    def __init__(self, source: str) -> None:
        self.source = source
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            keep_trailing_newline=True, undefined=jinja2.ChainableUndefined, autoescape=False
        )
        jinja_source = translate_go_template(source)
        try:
            self._template = env.from_string(jinja_source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"template: cannot translate ({exc.message})") from exc
        self.uses_messages = ".Messages" in source

    def _render(self, values: dict[str, Any]) -> str:
        try:
            return self._template.render(root=values)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"template failed: {exc}") from exc

    def _values(self, **values: Any) -> dict[str, Any]:
        base: dict[str, Any] = {
            "System": "",
            "Prompt": "",
            "Response": "",
            "Suffix": "",
            "Messages": [],
            "Tools": [],
        }
        base.update(values)
        return base

    def _cut_at_response(self, values: dict[str, Any]) -> str:
        text = self._render(self._values(**values, Response=_RESPONSE_MARK))
        return text.split(_RESPONSE_MARK, 1)[0]

    def render_chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = ()) -> str:
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if self.uses_messages:
            items = [{"Role": m.role, "Content": m.content} for m in messages]
            return self._render(self._values(System=system, Messages=items))
        # Ollama's legacy mode: one rendering per user/assistant turn, the last cut at {{ .Response }}.
        turns: list[tuple[str, str]] = []
        prompt: str | None = None
        for message in messages:
            if message.role == "user":
                if prompt is not None:
                    turns.append((prompt, ""))
                prompt = message.content
            elif message.role == "assistant":
                turns.append((prompt or "", message.content))
                prompt = None
        out: list[str] = []
        for index, (turn_prompt, response) in enumerate(turns):
            turn_system = system if index == 0 else ""
            out.append(self._render(self._values(System=turn_system, Prompt=turn_prompt, Response=response)))
        final_system = system if not turns else ""
        out.append(self._cut_at_response({"System": final_system, "Prompt": prompt or ""}))
        return "".join(out)

    def render_generate(self, prompt: str, system: str | None) -> str:
        if self.uses_messages:
            messages = [ChatMessage("system", system)] if system else []
            return self.render_chat([*messages, ChatMessage("user", prompt)])
        return self._cut_at_response({"System": system or "", "Prompt": prompt})


def select_template(
    override: str | None,
    model_template: str | None,
    *,
    bos_token: str = "",
    eos_token: str = "",
) -> PromptTemplate:
    """The override (Ollama syntax), else the model's Jinja template, else the default."""
    if override:
        return OllamaTemplate(override)
    if model_template:
        return JinjaChatTemplate(model_template, bos_token=bos_token, eos_token=eos_token)
    return DefaultTemplate()
