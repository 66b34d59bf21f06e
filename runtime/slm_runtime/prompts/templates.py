"""Prompt templates: the model's own Jinja chat template, an Ollama (Go text/template) TEMPLATE, or a default.

Choice, first that applies (:func:`select_template`): the manifest/--template (Ollama syntax), else the chat
template inside the model (``tokenizer.chat_template``, Hugging Face Jinja), else :class:`DefaultTemplate`.

Tools, tool calls, tool results and reasoning are shown the template's own way: Hugging Face's variables
(``tools``, ``messages[].tool_calls``, ``tool`` messages with ``name`` and ``tool_call_id``,
``reasoning_content``, ``enable_thinking``) for Jinja, Ollama's (``.Tools``, ``.ToolCalls``, ``.ToolName``,
``.Thinking``, ``$.Think``/``$.IsThinkSet``) for Go. What a template cannot show, found once by rendering probes
(:mod:`slm_runtime.prompts.capabilities`, the ``supports_*`` properties), is polyfilled
(:mod:`slm_runtime.prompts.polyfill`).

An Ollama TEMPLATE is translated to Jinja (:mod:`slm_runtime.prompts.gotemplate`, which lists the supported
forms) and rendered in a sandbox. A template that does not use ``.Messages`` is rendered once per
user/assistant turn, as Ollama does, and the last turn is cut at ``{{ .Response }}``. A template that cannot be
translated is refused at startup with a TemplateError.

The default (a model with neither) is a plain transcript that base models continue well::

    {system}\\n\\n            (only when there is a system prompt)
    User: {content}\\n          (each user turn)
    Assistant: {content}\\n     (each assistant turn)
    Tool ({name}): {content}\\n (each tool result)
    Assistant:                (the generation prompt; generation stops at "\\nUser:")
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

import jinja2
import jinja2.ext
import jinja2.sandbox

from slm_runtime.prompts.base import ChatMessage, PromptTemplate, TemplateCapabilities, TemplateError
from slm_runtime.prompts.capabilities import probe_capabilities
from slm_runtime.prompts.gotemplate import translate_go_template
from slm_runtime.prompts.govalues import go_json, go_print, go_range_pairs, go_range_values, go_values
from slm_runtime.prompts.polyfill import apply_polyfills
from slm_runtime.tools.types import ToolFunction

__all__ = [
    "DefaultTemplate",
    "JinjaChatTemplate",
    "OllamaTemplate",
    "select_template",
]


class _Probed:
    """The probed :attr:`capabilities` and :meth:`render_chat` of a template that renders raw chats."""

    def render_raw(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolFunction],
        think: bool | str | None,
        *,
        arguments_as_string: bool = False,
    ) -> str:
        raise NotImplementedError

    @cached_property
    def capabilities(self) -> TemplateCapabilities:
        """What this template shows itself (probed on first use)."""
        return probe_capabilities(self)

    def render_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[ToolFunction] = (), *, think: bool | str | None = None
    ) -> str:
        """The prompt of a chat, ending with the generation prompt: tools, calls, results and reasoning shown the
        template's way where it can, polyfilled where it cannot. ``think`` goes to templates that take it: None
        (the request did not say), a bool, or a reasoning level ("low", "medium", "high": thinking on, and the
        level as Hugging Face's ``reasoning_effort`` and Ollama's ``.ThinkLevel``)."""
        capabilities = self.capabilities
        chat, shown_tools = apply_polyfills(messages, tools, capabilities)
        return self.render_raw(chat, shown_tools, think, arguments_as_string=capabilities.arguments_as_string)


# --- the default -----------------------------------------------------------------------------------------


class DefaultTemplate(_Probed):
    source = ""
    stop: tuple[str, ...] = ("\nUser:",)

    def render_raw(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolFunction],
        think: bool | str | None,
        *,
        arguments_as_string: bool = False,
    ) -> str:
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
                name = f" ({message.tool_name})" if message.tool_name else ""
                parts.append(f"Tool{name}: {message.content}\n")
        parts.append("Assistant:")
        return "".join(parts)

    def render_generate(self, prompt: str, system: str | None) -> str:
        return f"{system}\n\n{prompt}" if system else prompt


# --- the model's own Hugging Face Jinja template ----------------------------------------------------------


def _raise_exception(message: str) -> None:
    raise TemplateError(f"chat template: {message}")


def _strftime_now(fmt: str) -> str:
    return datetime.now(UTC).strftime(fmt)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    """Hugging Face's ``tojson`` (keys in their order, no HTML escaping), not Jinja's (sorted, escaped): the
    prompt then matches what the model was trained on."""
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _hf_message(message: ChatMessage, arguments_as_string: bool) -> dict[str, Any]:
    """A message in the shape Hugging Face chat templates read; keys a message does not use are left out, since
    templates test for them (``'tool_calls' in message``, ``message.tool_calls is defined``)."""
    value: dict[str, Any] = {"role": message.role, "content": message.content}
    if message.tool_calls:
        calls = [call.as_template_value() for call in message.tool_calls]
        if arguments_as_string:
            for call in calls:
                call["function"]["arguments"] = json.dumps(call["function"]["arguments"], ensure_ascii=False)
        value["tool_calls"] = calls
    if message.role == "tool":
        if message.tool_name:
            value["name"] = message.tool_name
        if message.tool_call_id:
            value["tool_call_id"] = message.tool_call_id
    if message.thinking:
        value["reasoning_content"] = message.thinking
    return value


class JinjaChatTemplate(_Probed):
    stop: tuple[str, ...] = ()

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, loader=jinja2.BaseLoader(), extensions=[jinja2.ext.loopcontrols]
        )
        env.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now)
        env.filters["tojson"] = _tojson
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise TemplateError(f"the model's chat template line {exc.lineno}: {exc.message}") from exc
        self.source = source
        self._bos = bos_token
        self._eos = eos_token

    def render_raw(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolFunction],
        think: bool | str | None,
        *,
        arguments_as_string: bool = False,
    ) -> str:
        values: dict[str, Any] = {
            "messages": [_hf_message(m, arguments_as_string) for m in messages],
            "add_generation_prompt": True,
            "bos_token": self._bos,
            "eos_token": self._eos,
        }
        if tools:
            values["tools"] = [tool.as_template_value() for tool in tools]
        if think is not None:
            values["enable_thinking"] = bool(think)
            if isinstance(think, str):
                values["reasoning_effort"] = think
        try:
            return self._template.render(values)
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the model's chat template failed: {exc}") from exc

    def render_generate(self, prompt: str, system: str | None) -> str:
        messages = [ChatMessage("system", system)] if system else []
        return self.render_chat([*messages, ChatMessage("user", prompt)])


# --- Ollama Go templates, translated to Jinja -----------------------------------------------------------

_RESPONSE_MARK = "\x00slm-response\x00"


class OllamaTemplate(_Probed):
    stop: tuple[str, ...] = ()

    def __init__(self, source: str) -> None:
        self.source = source
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            keep_trailing_newline=True,
            undefined=jinja2.ChainableUndefined,
            autoescape=False,
            extensions=[jinja2.ext.loopcontrols],
            finalize=go_print,
        )
        env.globals.update(go_json=go_json, go_range_values=go_range_values, go_range_pairs=go_range_pairs)
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

    def _cut_at_response(self, values: dict[str, Any]) -> str:
        text = self._render({**values, "Response": _RESPONSE_MARK})
        return text.split(_RESPONSE_MARK, 1)[0]

    def render_raw(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolFunction],
        think: bool | str | None,
        *,
        arguments_as_string: bool = False,
    ) -> str:
        system = "\n\n".join(m.content for m in messages if m.role == "system" and m.content)
        if self.uses_messages:
            return self._render(go_values(messages, tools, think, System=system))
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
            values = go_values((), (), think, System=turn_system, Prompt=turn_prompt, Response=response)
            out.append(self._render(values))
        final_system = system if not turns else ""
        out.append(self._cut_at_response(go_values((), (), think, System=final_system, Prompt=prompt or "")))
        return "".join(out)

    def render_generate(self, prompt: str, system: str | None) -> str:
        if self.uses_messages:
            messages = [ChatMessage("system", system)] if system else []
            return self.render_chat([*messages, ChatMessage("user", prompt)])
        return self._cut_at_response(go_values((), (), None, System=system or "", Prompt=prompt))


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
