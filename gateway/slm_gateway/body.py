"""Request bodies: the model a request names, the same body with the model renamed, and its prompt prefix.

The gateway forwards a body as the client wrote it, except for the value of its top-level ``model`` (or, in
Ollama's older show/pull requests, ``name``), which becomes the name the model's runtime answers to. One pass of
the standard library's JSON scanner over the top-level object yields both the parsed values and where each one
sits in the text, so only that value's characters are replaced.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["BodyError", "RequestBody", "parse_body", "prefix_text"]

_DECODER = json.JSONDecoder()
_SPACE = re.compile(r"[ \t\n\r]*")
MODEL_KEYS = ("model", "name")
"""Where a request names its model, in order: ``model``, else (Ollama's show and pull, older clients) ``name``."""


class BodyError(ValueError):
    """A body that is not a JSON object, or names no model; the message says what to send."""


@dataclass(frozen=True)
class RequestBody:
    """A parsed JSON object body with the text positions of its top-level values."""

    text: str
    values: Mapping[str, Any]
    spans: Mapping[str, Sequence[tuple[int, int]]]

    @property
    def model_key(self) -> str | None:
        """The key that names the model (a non-empty string), if any."""
        for key in MODEL_KEYS:
            value = self.values.get(key)
            if isinstance(value, str) and value:
                return key
        return None

    @property
    def model(self) -> str | None:
        key = self.model_key
        return None if key is None else str(self.values[key])

    def with_model(self, name: str) -> bytes:
        """The body as bytes with every top-level value of :attr:`model_key` replaced by ``name``; the rest of
        the text is unchanged."""
        key = self.model_key
        if key is None or self.values[key] == name:
            return self.text.encode("utf-8")
        out = self.text
        for start, end in sorted(self.spans[key], reverse=True):
            out = out[:start] + json.dumps(name) + out[end:]
        return out.encode("utf-8")


def _space(text: str, index: int) -> int:
    match = _SPACE.match(text, index)
    return match.end() if match else index


def parse_body(raw: bytes) -> RequestBody:
    """Parse a JSON object body; BodyError when it is not one."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BodyError(f"the request body is not UTF-8 JSON: {exc.reason} at byte {exc.start}") from None
    values: dict[str, Any] = {}
    spans: dict[str, list[tuple[int, int]]] = {}
    try:
        index = _space(text, 0)
        if text[index : index + 1] != "{":
            raise BodyError("the request body must be a JSON object")
        index = _space(text, index + 1)
        if text[index : index + 1] == "}":
            index += 1
        else:
            while True:
                if text[index : index + 1] != '"':
                    raise BodyError(f"invalid JSON in the request body: expected a key at character {index}")
                key, index = _DECODER.raw_decode(text, index)  # a JSON string: the text starts with '"'
                index = _space(text, index)
                if text[index : index + 1] != ":":
                    raise BodyError(f"invalid JSON in the request body: expected ':' at character {index}")
                start = _space(text, index + 1)
                values[key], index = _DECODER.raw_decode(text, start)
                spans.setdefault(key, []).append((start, index))
                index = _space(text, index)
                if text[index : index + 1] == ",":
                    index = _space(text, index + 1)
                    continue
                if text[index : index + 1] == "}":
                    index += 1
                    break
                raise BodyError(f"invalid JSON in the request body: expected ',' or '}}' at character {index}")
    except json.JSONDecodeError as exc:
        raise BodyError(f"invalid JSON in the request body: {exc.msg} at character {exc.pos}") from None
    if text[_space(text, index) :]:
        raise BodyError(f"invalid JSON in the request body: extra data at character {index}")
    return RequestBody(text, values, spans)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts: the text ones
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")
    return ""


def prefix_text(values: Mapping[str, Any], chars: int) -> str | None:
    """The first ``chars`` characters of the prompt as the model will see it roughly (chat messages as
    ``role: content`` lines, or ``system`` then ``prompt``); None when the request has no prompt text."""
    parts: list[str] = []
    size = 0
    messages = values.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                line = f"{message.get('role', '')}: {_content_text(message.get('content'))}\n"
                parts.append(line)
                size += len(line)
                if size >= chars:
                    break
    else:
        system, prompt = values.get("system"), values.get("prompt")
        if isinstance(prompt, list):  # OpenAI completions: a list of prompts; the first decides
            prompt = prompt[0] if prompt and isinstance(prompt[0], str) else None
        if isinstance(system, str) and system:
            parts.append(system + "\n")
        if isinstance(prompt, str):
            parts.append(prompt)
    text = "".join(parts)[:chars]
    return text or None
