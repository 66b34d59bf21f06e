"""One generation, API-neutral: from prompt tokens to a stream of events that the serving modules put in their
own wire formats.

:func:`generate` fits the prompt into the context, resolves the sampling options, waits for a slot (the first
event, :class:`Admitted`, says it has one: from then on errors arrive as the last chunk of a stream), streams
:class:`TextChunk` s (stop sequences held back and cut), and ends with :class:`GenerationDone`. The tokens come
through :mod:`slm_runtime.bridge`; a consumer that goes away (client disconnect, timeout) closes the generator,
which stops the engine.

When the request asks for log-probabilities (``RequestOptions.logprobs``), each chunk carries the
:class:`TokenLogprob` of the tokens whose text it completes: a token is reported with the chunk that releases the
end of its text, so a token held back as a possible stop sequence waits with its text, and tokens whose text a stop
sequence cuts (even in part) are never reported. The tokens of all chunks together are exactly the tokens whose
text reached the output.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncGenerator
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import Literal

from slm_runtime.engines.base import Engine, GeneratedToken, SamplingParams
from slm_runtime.errors import InvalidRequestError
from slm_runtime.options import RequestOptions, resolve_sampling
from slm_runtime.prompts import fit_context
from slm_runtime.request_context import RequestContext
from slm_runtime.stops import StopMatcher

__all__ = [
    "Admitted",
    "DoneReason",
    "GenerationDone",
    "GenerationEvent",
    "TextChunk",
    "TokenLogprob",
    "TopLogprob",
    "generate",
]

DoneReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Admitted:
    """The request got a slot: from here on, errors arrive as the last chunk of a stream."""


@dataclass(frozen=True)
class TopLogprob:
    """One of the most likely tokens at a step: its text (bytes decoded, invalid UTF-8 replaced), bytes, log-prob."""

    token: str
    token_bytes: bytes
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability, and the ``top_logprobs`` most likely tokens at its step, most likely
    first (the chosen one among them when it ranks there). A control token's text is its markup."""

    token: str
    token_bytes: bytes
    logprob: float
    top_logprobs: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class TextChunk:
    text: str
    logprobs: tuple[TokenLogprob, ...] = ()
    """The tokens whose text this chunk completes, when the request asked for log-probabilities (see the module
    docstring). Only the last chunk of a generation may have empty text: it then carries tokens that added no
    complete character (a UTF-8 sequence the generation stopped in)."""


@dataclass(frozen=True)
class GenerationDone:
    done_reason: DoneReason
    prompt_tokens: int
    completion_tokens: int
    total_duration_ns: int
    prompt_eval_duration_ns: int
    eval_duration_ns: int
    context: list[int] = field(default_factory=list)
    cached_prompt_tokens: int = 0
    """Prompt tokens the engine took from its prompt cache (OpenAI's ``usage.prompt_tokens_details``)."""


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
    if params.json_schema is None:
        engine.validate(params)  # only a schema makes validation costly (its grammar is compiled)
    else:
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
    reported = _ReportedTokens(engine) if params.logprobs is not None else None
    request.record.prompt_tokens = len(tokens)

    lease = await service.admit(request.deadline, labels, request.ticket)
    try:
        yield Admitted()
    except BaseException:
        lease.release()
        raise
    generated: list[int] = []
    gen_started = time.perf_counter()
    first_token_at = gen_started
    cached = 0
    last_token_at = gen_started
    metrics.prompt_tokens.labels(*labels).inc(len(tokens))
    if params.max_tokens <= 0:
        lease.release()
    else:
        timeout = service.settings.server.request_timeout
        inter_token = metrics.inter_token_latency.labels(*labels)
        counted = metrics.generation_tokens.labels(*labels)
        tokens_out = service.bridge.tokens(engine, lease, tokens, params, deadline=request.deadline, timeout=timeout)
        async with aclosing(tokens_out):
            async for token in tokens_out:
                now = time.perf_counter()
                if not generated:
                    first_token_at = now
                    cached = token.cached_prompt_tokens
                    metrics.time_to_first_token.labels(*labels).observe(now - request.started)
                else:
                    inter_token.observe(now - last_token_at)
                last_token_at = now
                generated.append(token.token_id)
                request.record.completion_tokens = len(generated)
                counted.inc()
                text = matcher.feed(token.text)
                if reported is not None:
                    reported.feed(token)
                if text:
                    yield TextChunk(text, reported.release(text) if reported is not None else ())
                if matcher.stopped:
                    break
    tail = matcher.flush()
    logprobs = reported.release(tail, everything=not matcher.stopped) if reported is not None else ()
    if tail or logprobs:
        yield TextChunk(tail, logprobs)
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
        cached_prompt_tokens=cached,
    )


class _ReportedTokens:
    """Tokens with log-probabilities, held until the stop matcher releases the end of their text."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._pending: collections.deque[tuple[int, GeneratedToken]] = collections.deque()
        self._fed = 0
        self._released = 0

    def feed(self, token: GeneratedToken) -> None:
        self._fed += len(token.text)
        self._pending.append((self._fed, token))

    def release(self, text: str, *, everything: bool = False) -> tuple[TokenLogprob, ...]:
        """The tokens whose text ends within the output so far, now that ``text`` follows it (all that are left,
        with ``everything``)."""
        self._released += len(text)
        done: list[TokenLogprob] = []
        while self._pending and (everything or self._pending[0][0] <= self._released):
            done.append(self._describe(self._pending.popleft()[1]))
        return tuple(done)

    def _describe(self, token: GeneratedToken) -> TokenLogprob:
        piece = self._engine.token_bytes
        top = tuple(TopLogprob(_text(piece(i)), piece(i), logprob) for i, logprob in token.top_logprobs)
        if token.logprob is None:
            raise RuntimeError(f"the {self._engine.info.engine} engine did not report the log-probabilities asked for")
        data = piece(token.token_id)
        return TokenLogprob(_text(data), data, token.logprob, top)


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")
