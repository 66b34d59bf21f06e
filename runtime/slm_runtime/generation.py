"""One generation, API-neutral: from prompt tokens to a stream of events that the serving modules put in their
own wire formats.

:func:`generate` fits the prompt into the context, resolves the sampling options, waits for a slot (the first
event, :class:`Admitted`, says it has one: from then on errors arrive as the last chunk of a stream), streams
:class:`TextChunk` s (stop sequences held back and cut), and ends with :class:`GenerationDone`. The tokens come
through :mod:`slm_runtime.bridge`; a consumer that goes away (client disconnect, timeout) closes the generator,
which stops the engine.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from slm_runtime.engines.base import Engine, SamplingParams
from slm_runtime.errors import InvalidRequestError
from slm_runtime.options import RequestOptions, resolve_sampling
from slm_runtime.prompts import fit_context
from slm_runtime.request_context import RequestContext
from slm_runtime.stops import StopMatcher

__all__ = ["Admitted", "DoneReason", "GenerationDone", "GenerationEvent", "TextChunk", "generate"]

DoneReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Admitted:
    """The request got a slot: from here on, errors arrive as the last chunk of a stream."""


@dataclass(frozen=True)
class TextChunk:
    text: str


@dataclass(frozen=True)
class GenerationDone:
    done_reason: DoneReason
    prompt_tokens: int
    completion_tokens: int
    total_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    context: list[int] = field(default_factory=list)


GenerationEvent = Admitted | TextChunk | GenerationDone


async def generate(
    request: RequestContext, prompt: list[int], options: RequestOptions
) -> AsyncGenerator[GenerationEvent, None]:
    """Admitted, text chunks, then one GenerationDone. Raises APIError subclasses."""
    with request.track():
        events = _generate(request, prompt, options)
        async with aclosing(events):
            async for event in events:
                yield event


async def _plan(
    request: RequestContext, engine: Engine, prompt: list[int], options: RequestOptions
) -> tuple[list[int], SamplingParams]:
    """The prompt fitted into the context, and the sampling parameters (``max_tokens`` within the room left)."""
    settings = request.service.settings
    info = engine.info
    limit = min(settings.model.context_length or info.context_length, info.context_length)
    context = min(options.num_ctx or limit, limit)
    tokens = fit_context(prompt, context, options.truncate)
    room = context - len(tokens)
    num_predict = options.num_predict if options.num_predict is not None else settings.sampling.num_predict
    max_tokens = room if num_predict < 0 else min(num_predict, room)
    params = resolve_sampling(settings.sampling, options, max_tokens)
    if params.json_schema is not None and not info.supports_json_schema:
        raise InvalidRequestError(
            f"the {info.engine} engine cannot constrain output to JSON: remove the format", param="format"
        )
    await asyncio.to_thread(engine.validate, params)
    return tokens, params


async def _generate(
    request: RequestContext, prompt: list[int], options: RequestOptions
) -> AsyncGenerator[GenerationEvent, None]:
    service = request.service
    metrics = service.metrics
    labels = request.labels
    engine = await request.engine()
    tokens, params = await _plan(request, engine, prompt, options)
    stops = options.stop if options.stop is not None else service.settings.sampling.stop
    matcher = StopMatcher((*stops, *options.extra_stop))
    request.record.prompt_tokens = len(tokens)

    lease = await service.admit(request.deadline, labels)
    try:
        yield Admitted()
    except BaseException:
        lease.release()
        raise
    generated: list[int] = []
    gen_started = time.perf_counter()
    first_token_at = gen_started
    last_token_at = gen_started
    metrics.prompt_tokens.labels(*labels).inc(len(tokens))
    if params.max_tokens <= 0:
        lease.release()
    else:
        timeout = service.settings.server.request_timeout
        tokens_out = service.bridge.tokens(engine, lease, tokens, params, deadline=request.deadline, timeout=timeout)
        async with aclosing(tokens_out):
            async for token in tokens_out:
                now = time.perf_counter()
                if not generated:
                    first_token_at = now
                    metrics.time_to_first_token.labels(*labels).observe(now - request.started)
                else:
                    metrics.inter_token_latency.labels(*labels).observe(now - last_token_at)
                last_token_at = now
                generated.append(token.token_id)
                request.record.completion_tokens = len(generated)
                metrics.generation_tokens.labels(*labels).inc()
                text = matcher.feed(token.text)
                if text:
                    yield TextChunk(text)
                if matcher.stopped:
                    break
    tail = matcher.flush()
    if tail:
        yield TextChunk(tail)
    finished = time.perf_counter()
    reason: DoneReason = "length" if not matcher.stopped and len(generated) >= params.max_tokens else "stop"
    yield GenerationDone(
        done_reason=reason,
        prompt_tokens=len(tokens),
        completion_tokens=len(generated),
        total_duration_ns=int((finished - request.started) * 1e9),
        prompt_eval_duration_ns=int((first_token_at - gen_started) * 1e9),
        eval_duration_ns=int((finished - first_token_at) * 1e9),
        context=[*tokens, *generated],
    )
