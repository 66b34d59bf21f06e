"""Log-probabilities in OpenAI's two shapes: chat's ``logprobs.content[]`` (token, logprob, bytes, top_logprobs) and
the legacy completions' parallel lists (tokens, token_logprobs, top_logprobs, text_offset)."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from slm_runtime.generation import TokenLogprob, TopLogprob

__all__ = ["TextOffsets", "chat_logprobs", "completion_logprobs"]


def _entry(token: TokenLogprob | TopLogprob) -> dict[str, Any]:
    return {"token": token.token, "logprob": token.logprob, "bytes": list(token.token_bytes)}


def chat_logprobs(tokens: Sequence[TokenLogprob]) -> dict[str, Any]:
    """Chat's shape: one entry per token, with its ``top_logprobs`` (empty unless asked)."""
    content = [{**_entry(t), "top_logprobs": [_entry(top) for top in t.top_logprobs]} for t in tokens]
    return {"content": content, "refusal": None}


@dataclass
class TextOffsets:
    """Where each token starts in a choice's text, in characters: its bytes decoded as they come (a character split
    across tokens starts at the token that completes it)."""

    offset: int = 0
    _decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="replace")
    )

    def next(self, token: TokenLogprob) -> int:
        start = self.offset
        self.offset += len(self._decoder.decode(token.token_bytes))
        return start


def completion_logprobs(tokens: Sequence[TokenLogprob], offsets: TextOffsets) -> dict[str, Any]:
    """The legacy completions' shape; ``offsets`` carries on from the choice's text so far (a stream's chunks)."""
    return {
        "tokens": [t.token for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{top.token: top.logprob for top in t.top_logprobs} for t in tokens],
        "text_offset": [offsets.next(t) for t in tokens],
    }
