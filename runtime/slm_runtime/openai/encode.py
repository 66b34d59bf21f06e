"""Answers in OpenAI's wire shapes: whole chat and text completions, and their SSE chunks (a stream encoder per
request), with tool calls, reasoning and usage."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slm_runtime import __version__
from slm_runtime.answers import Answer, CallDelta, Delta
from slm_runtime.openai.logprobs import TextOffsets, chat_logprobs, completion_logprobs
from slm_runtime.tools.types import ToolCall

__all__ = ["FINGERPRINT", "ChatStream", "CompletionStream", "Envelope", "chat_choice", "text_choice", "usage"]

FINGERPRINT = f"slm-runtime-{__version__}"


def usage(answers: Sequence[Answer], per_prompt: int = 1) -> dict[str, Any]:
    """Token counts of a request: each prompt once (as OpenAI counts it), every choice's completion, and how many
    prompt tokens came from the prompt cache (of each prompt's first choice)."""
    prompt = sum(answer.done.prompt_tokens for answer in answers[::per_prompt])
    cached = sum(answer.done.cached_prompt_tokens for answer in answers[::per_prompt])
    completion = sum(answer.done.completion_tokens for answer in answers)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached},
    }


@dataclass(frozen=True)
class Envelope:
    """The fields every object of one response shares."""

    kind: str  # chatcmpl / cmpl
    object: str
    model: str
    id: str = field(default="")
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        if not self.id:
            object.__setattr__(self, "id", f"{self.kind}-{uuid.uuid4().hex}")

    def wrap(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": self.object,
            "created": self.created,
            "model": self.model,
            "system_fingerprint": FINGERPRINT,
            "choices": choices,
            **extra,
        }


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": json.dumps(call.arguments)}}


def chat_choice(index: int, answer: Answer, *, logprobs: bool = False) -> dict[str, Any]:
    """One choice of a whole chat completion (content null when the answer is only tool calls, as OpenAI's)."""
    message: dict[str, Any] = {"role": "assistant", "content": answer.content or (None if answer.calls else "")}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if answer.calls:
        message["tool_calls"] = [_tool_call(call) for call in answer.calls]
    return {
        "index": index,
        "message": message,
        "logprobs": chat_logprobs(answer.logprobs) if logprobs else None,
        "finish_reason": answer.finish_reason,
    }


def text_choice(index: int, answer: Answer, prefix: str = "", *, logprobs: bool = False) -> dict[str, Any]:
    return {
        "index": index,
        "text": prefix + answer.content,
        "logprobs": completion_logprobs(answer.logprobs, TextOffsets(len(prefix))) if logprobs else None,
        "finish_reason": answer.finish_reason,
    }


def _sse(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


def _call_delta(delta: CallDelta) -> dict[str, Any]:
    if delta.name:  # a call's first piece: what the client's stream helpers start a call from
        return {
            "index": delta.index,
            "id": delta.id,
            "type": "function",
            "function": {"name": delta.name, "arguments": delta.arguments},
        }
    return {"index": delta.index, "function": {"arguments": delta.arguments}}


@dataclass
class _Stream:
    envelope: Envelope
    choices: int
    include_usage: bool
    answers: dict[int, Answer] = field(default_factory=dict)
    per_prompt: int = 1
    logprobs: bool = False

    def chunk(self, choice: dict[str, Any]) -> bytes:
        extra = {"usage": None} if self.include_usage else {}
        return _sse(self.envelope.wrap([{"logprobs": None, "finish_reason": None, **choice}], **extra))

    def tail(self) -> bytes:
        if not self.include_usage:
            return b"data: [DONE]\n\n"
        answers = [self.answers[index] for index in range(self.choices)]
        return _sse(self.envelope.wrap([], usage=usage(answers, self.per_prompt))) + b"data: [DONE]\n\n"


class ChatStream(_Stream):
    """Chat completion chunks: each choice's role first, then its deltas (content, ``reasoning_content``,
    ``tool_calls``), its finish reason, and the usage chunk when asked."""

    def head(self) -> bytes:
        return b"".join(
            self.chunk({"index": i, "delta": {"role": "assistant", "content": ""}}) for i in range(self.choices)
        )

    def delta(self, index: int, delta: Delta) -> bytes:
        body: dict[str, Any] = {}
        if delta.thinking:
            body["reasoning_content"] = delta.thinking
        if delta.content:
            body["content"] = delta.content
        if delta.calls:
            body["tool_calls"] = [_call_delta(call) for call in delta.calls]
        logprobs = chat_logprobs(delta.logprobs) if self.logprobs else None
        return self.chunk({"index": index, "delta": body, "logprobs": logprobs})

    def finished(self, index: int, answer: Answer) -> bytes:
        self.answers[index] = answer
        return self.chunk({"index": index, "delta": {}, "finish_reason": answer.finish_reason})


@dataclass
class CompletionStream(_Stream):
    """Text completion chunks: each choice's echoed prompt (with ``echo``), the text as it comes, then each
    choice's finish reason."""

    echoed: Sequence[str] = ()
    _offsets: dict[int, TextOffsets] = field(default_factory=dict)

    def head(self) -> bytes:
        return b"".join(self.chunk({"index": i, "text": text}) for i, text in enumerate(self.echoed) if text)

    def delta(self, index: int, delta: Delta) -> bytes:
        choice: dict[str, Any] = {"index": index, "text": delta.content}
        if self.logprobs:
            echoed = len(self.echoed[index]) if self.echoed else 0
            offsets = self._offsets.setdefault(index, TextOffsets(echoed))
            choice["logprobs"] = completion_logprobs(delta.logprobs, offsets)
        return self.chunk(choice)

    def finished(self, index: int, answer: Answer) -> bytes:
        self.answers[index] = answer
        return self.chunk({"index": index, "text": "", "finish_reason": answer.finish_reason})
