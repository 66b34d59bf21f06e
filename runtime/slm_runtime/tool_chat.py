"""A chat with tools and thinking, API-neutral: what a request's tools and tool choice mean for the generation, and
how its text becomes content, thinking and tool calls. Both APIs use it, so it exists once.

- :func:`check_tools`: the request's tools and choice make sense (a 400 naming the field otherwise).
- :func:`forced_schema`: ``required`` or a named function constrain the generation to a call (a JSON schema that
  llama.cpp turns into a grammar), so that the arguments always parse and follow the function's schema.
- :class:`ChatShaper`: reads the generation as it comes. Thinking is split out first (where the template thinks);
  then a forced call is streamed as its JSON grows (name first, then the arguments' text), ``auto`` goes through the
  template family's parser (which holds back only what may start a call), and ``none`` is plain content.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from slm_runtime.answers import Answer, CallDelta, Delta
from slm_runtime.call_scan import scan_calls
from slm_runtime.engines.base import Engine, SamplingParams
from slm_runtime.errors import InvalidRequestError
from slm_runtime.generation import GenerationDone
from slm_runtime.prompts import ChatMessage, PromptBuilder, PromptTemplate, TemplateError
from slm_runtime.prompts.thinking import ThinkingSplitter as TagSplitter
from slm_runtime.prompts.thinking import opens_thinking, thinking_tags
from slm_runtime.tools.grammar import forced_call_schema, parse_forced_calls
from slm_runtime.tools.parsers import parser_for
from slm_runtime.tools.types import ToolCall, ToolChoice, ToolFunction, new_call_id

__all__ = [
    "CallParser",
    "ChatShaper",
    "ThinkingSplitter",
    "ToolRequest",
    "chat_prompt",
    "chat_shaper",
    "check_schemas",
    "check_tools",
    "forced_schema",
    "thinking_of",
]


@dataclass(frozen=True)
class ToolRequest:
    """The tools a chat offers and what it allows (no tools: a plain chat)."""

    tools: tuple[ToolFunction, ...] = ()
    choice: ToolChoice = field(default_factory=ToolChoice)

    @property
    def forced(self) -> bool:
        """A call is required: the generation is constrained to one."""
        return bool(self.tools) and self.choice.mode in ("required", "function")

    @property
    def parsed(self) -> bool:
        """The model decides: calls are read from its text."""
        return bool(self.tools) and self.choice.mode == "auto"


def check_tools(request: ToolRequest) -> None:
    """A 400 naming the field for tools that share a name, or a choice the tools cannot satisfy."""
    seen: set[str] = set()
    for index, tool in enumerate(request.tools):
        if tool.name in seen:
            raise InvalidRequestError(
                f'two tools are named "{tool.name}": give each function its own name',
                param=f"tools[{index}].function.name",
            )
        seen.add(tool.name)
        if tool.parameters.get("type", "object") != "object":
            raise InvalidRequestError(
                "a function's parameters must be a JSON schema of an object",
                param=f"tools[{index}].function.parameters",
            )
    choice = request.choice
    if choice.mode in ("required", "function") and not request.tools:
        raise InvalidRequestError(f'tool_choice "{choice.mode}" needs tools: send them in "tools"', param="tool_choice")
    if choice.mode == "function" and choice.function not in seen:
        raise InvalidRequestError(
            f'tool_choice names the function "{choice.function}", which is not in "tools"', param="tool_choice"
        )


def forced_schema(request: ToolRequest) -> dict[str, Any] | None:
    """The JSON schema a required or named call is generated under; None when the model decides."""
    if not request.forced:
        return None
    try:
        return forced_call_schema(list(request.tools), request.choice)
    except Exception as exc:  # a parameters schema too odd to combine ($defs that are no object...)
        raise InvalidRequestError(f"cannot build a call schema from these tools: {exc}", param="tools") from exc


def chat_prompt(
    prompts: PromptBuilder, messages: Sequence[ChatMessage], request: ToolRequest, think: bool | str | None
) -> str:
    """The chat's prompt, its tools shown (whatever the choice, as OpenAI and llama.cpp show them); a 400 when
    the template cannot render it."""
    try:
        return prompts.chat(messages, request.tools, think=think)
    except TemplateError as exc:
        raise InvalidRequestError(
            f"the model's chat template cannot render this chat: {exc}", param="messages"
        ) from exc


async def check_schemas(engine: Engine, request: ToolRequest) -> None:
    """For a forced call: the engine can constrain output, and each function's schema becomes a grammar (a 400
    naming the function's parameters otherwise)."""
    if not request.forced:
        return
    if not engine.info.supports_json_schema:
        raise InvalidRequestError(
            f'the {engine.info.engine} engine cannot constrain output to a tool call: send tool_choice "auto"',
            param="tool_choice",
        )
    for index, tool in enumerate(request.tools):
        try:
            await asyncio.to_thread(engine.validate, SamplingParams(max_tokens=1, json_schema=tool.parameters))
        except InvalidRequestError as err:
            err.param = f"tools[{index}].function.parameters"
            raise


def thinking_of(template: PromptTemplate, think: bool | str | None) -> bool:
    """Whether the answer's thinking is split out: the template thinks and the request did not turn it off."""
    return template.capabilities.thinking and think is not False


class CallParser(Protocol):
    """Finds a template family's tool calls in free text (:mod:`slm_runtime.tools.parsers`)."""

    def feed(self, text: str) -> str:
        """The content that can be sent now (what may start a call is held back)."""
        ...

    def finish(self) -> tuple[str, list[ToolCall]]:
        """The content held back that was not a call, and the calls found."""
        ...


class ThinkingSplitter(Protocol):
    """Splits a thinking template's reasoning from its answer (:mod:`slm_runtime.prompts.thinking`)."""

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, content) that ``text`` adds and that can be sent now."""
        ...

    def finish(self) -> tuple[str, str]:
        """(thinking, content) held back until the end."""
        ...


class _ForcedCalls:
    """A forced call's JSON, streamed as it grows: each call's id and name once its name is complete, then its
    arguments' text (rescanned from the start each time: a call is short)."""

    def __init__(self) -> None:
        self.text = ""
        self.ids: list[str] = []
        self._sent: list[int] = []  # per call: offset up to which its arguments went out

    def feed(self, text: str) -> tuple[CallDelta, ...]:
        self.text += text
        out: list[CallDelta] = []
        for index, span in enumerate(scan_calls(self.text)):
            if span.arguments_start is None or span.name is None:
                break
            if index == len(self.ids):
                self.ids.append(new_call_id())
                self._sent.append(span.arguments_start)
                out.append(CallDelta(index, id=self.ids[index], name=span.name))
            end = span.arguments_end if span.arguments_end is not None else len(self.text)
            if end > self._sent[index]:
                out.append(CallDelta(index, arguments=self.text[self._sent[index] : end]))
                self._sent[index] = end
        return tuple(out)


def _call_deltas(calls: Sequence[ToolCall], first: int) -> tuple[CallDelta, ...]:
    out: list[CallDelta] = []
    for index, call in enumerate(calls[first:], start=first):
        out.append(CallDelta(index, id=call.id, name=call.name))
        out.append(CallDelta(index, arguments=json.dumps(call.arguments)))
    return tuple(out)


class ChatShaper:
    """One choice of a chat, read as it comes (see the module docstring)."""

    def __init__(
        self,
        request: ToolRequest,
        *,
        parser: CallParser | None = None,
        thinking: ThinkingSplitter | None = None,
    ) -> None:
        self._request = request
        self._parser = parser if request.parsed else None
        self._forced = _ForcedCalls() if request.forced else None
        self._thinking = thinking
        self._content: list[str] = []
        self._thought: list[str] = []

    def feed(self, text: str) -> Delta:
        thinking, content = self._thinking.feed(text) if self._thinking is not None else ("", text)
        return self._route(thinking, content)

    def _route(self, thinking: str, content: str) -> Delta:
        """Thinking as it is; content into the forced call, through the parser, or as it is."""
        self._thought.append(thinking)
        if self._forced is not None:
            return Delta(thinking=thinking, calls=self._forced.feed(content))
        if self._parser is not None:
            content = self._parser.feed(content)
        self._content.append(content)
        return Delta(content=content, thinking=thinking)

    def finish(self, done: GenerationDone) -> tuple[Delta, Answer]:
        last = self._route(*self._thinking.finish()) if self._thinking is not None else Delta()
        thinking = "".join(self._thought)
        if self._forced is not None:
            tail, answer = self._finish_forced(done, thinking)
            return Delta(thinking=last.thinking, calls=last.calls + tail.calls), answer
        content, rest = "".join(self._content), ""
        calls: tuple[ToolCall, ...] = ()
        if self._parser is not None:
            rest, found = self._parser.finish()
            calls = tuple(found if self._request.choice.parallel else found[:1])
        tail = Delta(content=last.content + rest, thinking=last.thinking, calls=_call_deltas(calls, 0))
        return tail, Answer(content + rest, done, thinking=thinking, calls=calls)

    def _finish_forced(self, done: GenerationDone, thinking: str) -> tuple[Delta, Answer]:
        assert self._forced is not None
        request = self._request
        try:
            parsed = parse_forced_calls(self._forced.text, list(request.tools), request.choice)
        except ValueError:  # cut short (max_tokens, a stop sequence): the text as it is
            return Delta(), Answer(self._forced.text, done, thinking=thinking)
        ids = self._forced.ids
        calls = tuple(replace(call, id=ids[i]) if i < len(ids) else call for i, call in enumerate(parsed))
        return Delta(calls=_call_deltas(calls, len(ids))), Answer("", done, thinking=thinking, calls=calls)


def chat_shaper(request: ToolRequest, template: PromptTemplate, thinks: bool, prompt: str) -> ChatShaper:
    """The shaper of one choice of ``prompt``: the template family's call parser in ``auto``, and its thinking
    splitter when it thinks (a forced call is JSON from its first token: nothing to split)."""
    parser = parser_for(template.source) if request.parsed else None
    tags = thinking_tags(template.source) if thinks and not request.forced else None
    splitter = TagSplitter(tags, inside=opens_thinking(prompt, tags)) if tags is not None else None
    return ChatShaper(request, parser=parser, thinking=splitter)
