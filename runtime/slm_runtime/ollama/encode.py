"""Answers in Ollama's wire shapes: NDJSON chunks and whole answers of /api/generate and /api/chat, with thinking
and tool calls (arguments as objects, sent whole in one chunk's message, as Ollama does)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from slm_runtime.answers import Answer, Delta
from slm_runtime.generation import GenerationDone, TokenLogprob, TopLogprob
from slm_runtime.streaming import rfc3339_now
from slm_runtime.tools.types import ToolCall

__all__ = ["ChatStream", "GenerateStream", "chat_whole", "final_fields", "generate_whole", "line"]


def line(body: dict[str, Any]) -> bytes:
    return (json.dumps(body) + "\n").encode()


def final_fields(done: GenerationDone, load_duration_ns: int) -> dict[str, Any]:
    return {
        "done_reason": done.done_reason,
        "total_duration": done.total_duration_ns,
        "load_duration": load_duration_ns,
        "prompt_eval_count": done.prompt_tokens,
        "prompt_eval_duration": done.prompt_eval_duration_ns,
        "eval_count": done.completion_tokens,
        "eval_duration": done.eval_duration_ns,
    }


def _token(token: TokenLogprob | TopLogprob) -> dict[str, Any]:
    return {"token": token.token, "logprob": token.logprob, "bytes": list(token.token_bytes)}


def logprobs_json(tokens: tuple[TokenLogprob, ...]) -> list[dict[str, Any]]:
    """Ollama's shape: one entry per token, with its ``top_logprobs`` when asked."""
    return [{**_token(t), "top_logprobs": [_token(top) for top in t.top_logprobs]} for t in tokens]


def _tool_call(index: int, call: ToolCall) -> dict[str, Any]:
    return {"id": call.id, "function": {"index": index, "name": call.name, "arguments": call.arguments}}


def _message(content: str, thinking: str = "", calls: tuple[ToolCall, ...] = ()) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if thinking:
        message["thinking"] = thinking
    if calls:
        message["tool_calls"] = [_tool_call(i, call) for i, call in enumerate(calls)]
    return message


@dataclass
class _Stream:
    model: str
    load_ns: int
    logprobs: bool = False

    def head(self) -> bytes:
        return b""

    def tail(self) -> bytes:
        return b""

    def chunk(self, *, logprobs: tuple[TokenLogprob, ...] = (), **fields: Any) -> dict[str, Any]:
        body = {"model": self.model, "created_at": rfc3339_now(), **fields}
        if self.logprobs:
            body["logprobs"] = logprobs_json(logprobs)
        return body


@dataclass
class GenerateStream(_Stream):
    """/api/generate chunks: the response as it comes (``thinking`` apart), then the final chunk with the
    counters (and the ``context`` unless raw)."""

    with_context: bool = True

    def delta(self, index: int, delta: Delta) -> bytes:
        body = self.chunk(response=delta.content, done=False, logprobs=delta.logprobs)
        if delta.thinking:
            body["thinking"] = delta.thinking
        return line(body)

    def finished(self, index: int, answer: Answer) -> bytes:
        return line(self.final(answer, response=""))

    def final(self, answer: Answer, *, response: str, thinking: str = "") -> dict[str, Any]:
        body = self.chunk(response=response, done=True)
        if thinking:
            body["thinking"] = thinking
        body.update(final_fields(answer.done, self.load_ns))
        if self.with_context:
            body["context"] = answer.done.context
        return body


@dataclass
class ChatStream(_Stream):
    """/api/chat chunks: the message as it comes (content, ``thinking``), the tool calls whole in one message once
    the answer is read, then the final chunk with the counters."""

    def delta(self, index: int, delta: Delta) -> bytes:
        if not (delta.content or delta.thinking or delta.logprobs):
            return b""  # tool call fragments: Ollama sends each call whole
        return line(self.chunk(message=_message(delta.content, delta.thinking), done=False, logprobs=delta.logprobs))

    def finished(self, index: int, answer: Answer) -> bytes:
        calls = line(self.chunk(message=_message("", calls=answer.calls), done=False)) if answer.calls else b""
        body = self.chunk(message=_message(""), done=True)
        body.update(final_fields(answer.done, self.load_ns))
        return calls + line(body)


def generate_whole(stream: GenerateStream, answer: Answer) -> dict[str, Any]:
    body = stream.final(answer, response=answer.content, thinking=answer.thinking)
    if stream.logprobs:
        body["logprobs"] = logprobs_json(answer.logprobs)
    return body


def chat_whole(stream: ChatStream, answer: Answer) -> dict[str, Any]:
    message = _message(answer.content, answer.thinking, answer.calls)
    body = stream.chunk(message=message, done=True, logprobs=answer.logprobs)
    body.update(final_fields(answer.done, stream.load_ns))
    return body
