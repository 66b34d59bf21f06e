"""Embeddings, API-neutral: inputs fitted into the context, a slot taken for the computation, which runs on the
service's embedding thread. The serving modules normalize, cut and encode the vectors their own way."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from slm_runtime.engines.base import Embeddings, Engine
from slm_runtime.errors import ContextLengthExceededError, EmbeddingsUnsupportedError
from slm_runtime.request_context import RequestContext

__all__ = ["embed"]


async def embed(request: RequestContext, texts: Sequence[str], *, truncate: bool) -> Embeddings:
    """Unnormalized embeddings of ``texts``; an input longer than the context is cut with ``truncate``, else
    refused with ContextLengthExceededError."""
    service = request.service
    with request.track():
        engine = await request.engine()
        if not (engine.info.supports_embeddings and service.settings.engine.embeddings):
            raise EmbeddingsUnsupportedError(
                f"model {service.name} does not support embeddings (engine {engine.info.engine})"
            )
        prepared = [await _fit_input(engine, text, truncate) for text in texts]
        lease = await service.admit(request.deadline, request.labels)
        try:
            result = await asyncio.wrap_future(service.embed_thread.submit(0, lambda: engine.embed(prepared)))
        finally:
            lease.release()
        request.record.prompt_tokens = sum(result.token_counts)
        service.metrics.prompt_tokens.labels(*request.labels).inc(request.record.prompt_tokens)
        return result


async def _fit_input(engine: Engine, text: str, truncate: bool) -> str:
    context = engine.info.context_length
    tokens = await asyncio.to_thread(engine.tokenize, text, add_special=True)
    if len(tokens) < context:
        return text
    if not truncate:
        raise ContextLengthExceededError(
            f"an input is {len(tokens)} tokens, longer than the context length of {context} "
            'tokens: shorten it or send "truncate": true',
            param="input",
        )
    return await asyncio.to_thread(engine.detokenize, tokens[1 : context - 1])
