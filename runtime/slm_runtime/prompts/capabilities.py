"""What a template can show, found by rendering probes, as llama.cpp's minja does: render a chat that holds a
system message, a tool, a tool call, a tool result or reasoning text with a recognisable value, and see whether
the value comes out. A template that raises on the probe (Gemma 3 refuses a ``tool`` role) lacks the capability.
What a template lacks is then polyfilled (:mod:`slm_runtime.prompts.polyfill`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from slm_runtime.prompts.base import ChatMessage, TemplateCapabilities
from slm_runtime.tools.types import ToolCall, ToolFunction

__all__ = ["RawRenderer", "probe_capabilities"]


class RawRenderer(Protocol):
    def render_raw(
        self,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolFunction],
        think: bool | str | None,
        *,
        arguments_as_string: bool = False,
    ) -> str:
        """The template's own rendering of a chat, without polyfills."""
        ...


_USER = ChatMessage("user", "slm-probe-question")
_SYSTEM = "slm-probe-system-text"
_TOOL = ToolFunction(
    "slm_probe_tool",
    "slm-probe-description",
    {"type": "object", "properties": {"slm_probe_argument": {"type": "string"}}, "required": ["slm_probe_argument"]},
)
_ARGUMENT = "slm-probe-argument-value"
_CALL = ToolCall("slm_probe_tool", {"slm_probe_argument": _ARGUMENT}, id="call_slmprobe00000001")
_RESULT = "slm-probe-tool-result"
_REASONING = "slm-probe-reasoning"


def _render(
    renderer: RawRenderer,
    messages: Sequence[ChatMessage],
    tools: Sequence[ToolFunction] = (),
    think: bool | str | None = None,
    *,
    arguments_as_string: bool = False,
) -> str:
    try:
        return renderer.render_raw(messages, tools, think, arguments_as_string=arguments_as_string)
    except Exception:  # a template that raises on a probe lacks what the probe shows
        return ""


def _shows(
    renderer: RawRenderer,
    needle: str,
    chats: Sequence[Sequence[ChatMessage]],
    tools: Sequence[ToolFunction] = (),
    think: bool | str | None = None,
    *,
    arguments_as_string: bool = False,
) -> bool:
    return any(
        needle in _render(renderer, chat, tools, think, arguments_as_string=arguments_as_string) for chat in chats
    )


def probe_capabilities(renderer: RawRenderer) -> TemplateCapabilities:
    """Render the probes through ``renderer`` and say what came out."""
    with_system = [ChatMessage("system", _SYSTEM), _USER]
    system = _shows(renderer, _SYSTEM, [with_system])
    tools = _shows(renderer, _TOOL.name, [[_USER], with_system], [_TOOL])
    call = ChatMessage("assistant", "", tool_calls=(_CALL,))
    result = ChatMessage("tool", _RESULT, tool_name=_CALL.name, tool_call_id=_CALL.id)
    call_chats = [[_USER, call], [_USER, call, result]]
    as_string = False
    tool_calls = _shows(renderer, _ARGUMENT, call_chats)
    if not tool_calls and _shows(renderer, _ARGUMENT, call_chats, arguments_as_string=True):
        tool_calls = as_string = True
    tool_responses = _shows(renderer, _RESULT, [[_USER, call, result]], arguments_as_string=as_string)
    reasoning = [_USER, ChatMessage("assistant", "answer", thinking=_REASONING)]
    thinking = _render(renderer, [_USER], think=True) != _render(renderer, [_USER], think=False) or _shows(
        renderer, _REASONING, [reasoning], think=True
    )
    return TemplateCapabilities(system, tools, tool_calls, tool_responses, thinking, as_string)
