"""From prompt text to the tokens a generation starts from: tokenizing, checking a client's token ids, and fitting
the prompt into the context."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from slm_runtime.engines.base import Engine
from slm_runtime.errors import ContextLengthExceededError, InvalidRequestError

__all__ = ["INLINE_TOKENIZE_CHARS", "check_token_ids", "fit_context", "tokenize", "tokenize_prompt"]

INLINE_TOKENIZE_CHARS = 512
"""Texts up to this long are tokenized on the event loop: llama.cpp takes about 0.1-0.3 ms for them, less than a hop
to a worker thread and back, which a short prompt would otherwise pay before its first token. Longer ones go to a
thread, so that a long prompt never holds up the tokens of other requests."""


async def tokenize(engine: Engine, text: str, *, add_special: bool) -> list[int]:
    """``engine.tokenize``: on the loop for a short text, on a worker thread for a long one."""
    if len(text) <= INLINE_TOKENIZE_CHARS:
        return engine.tokenize(text, add_special=add_special)
    return await asyncio.to_thread(engine.tokenize, text, add_special=add_special)


async def tokenize_prompt(engine: Engine, text: str) -> list[int]:
    """Tokens of rendered prompt text; BOS is added unless the template already wrote it."""
    bos = engine.info.bos_token
    add_special = not (bos and text.startswith(bos))
    return await tokenize(engine, text, add_special=add_special)


def check_token_ids(engine: Engine, tokens: Sequence[int], param: str) -> None:
    """Refuse token ids the model does not have (engines may abort on them)."""
    vocab = engine.info.vocab_size
    for index, token in enumerate(tokens):
        if token < 0 or (vocab and token >= vocab):
            raise InvalidRequestError(
                f"{param}[{index}] = {token} is not a token id of this model (0..{vocab - 1})", param=param
            )


def fit_context(tokens: list[int], context: int, truncate: bool) -> list[int]:
    """``tokens`` when they leave room to generate in ``context``; else, with ``truncate``, the first token and the
    last three quarters of the context (as Ollama keeps them), or ContextLengthExceededError."""
    if len(tokens) < context:
        return tokens
    if not truncate:
        raise ContextLengthExceededError(
            f"the prompt is {len(tokens)} tokens, longer than the context length of {context} tokens: "
            "shorten it, raise the context length (--context-length / options.num_ctx) or send "
            '"truncate": true',
            param="prompt",
        )
    keep = context * 3 // 4
    return tokens[:1] + tokens[len(tokens) - (keep - 1) :]
