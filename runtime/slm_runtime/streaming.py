"""HTTP plumbing shared by both APIs: the response to a generation (:func:`respond`: streamed once admitted, or
whole; HTTP 499 when the client left first), disconnect-aware collection, errors midway as a stream's last
chunk, and a streaming response that always closes its generator (which stops the engine and frees the slot)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from slm_runtime.errors import ApiFlavor, as_api_error, stream_error_chunk
from slm_runtime.generation import Admitted, GenerationDone, GenerationEvent, TextChunk

__all__ = [
    "CLIENT_CLOSED",
    "ClosingStreamingResponse",
    "encoded",
    "error_terminated",
    "respond",
    "rfc3339_now",
]

CLIENT_CLOSED = 499
"""The status of a response to a client that went away before it started (nginx's name for it)."""

_DISCONNECT_POLL_SECONDS = 0.25

Events = AsyncGenerator[GenerationEvent, None]


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()


async def _until_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(_DISCONNECT_POLL_SECONDS)


async def _next_or_disconnect(events: Events, request: Request) -> GenerationEvent | None:
    """The next event, or None when the client went away first (the generator is then closed)."""
    step = asyncio.ensure_future(anext(events))
    watch = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait({step, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if step.done():
        return step.result()
    step.cancel()
    with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
        await step
    await events.aclose()
    return None


async def _admitted(events: Events, request: Request) -> Events | None:
    """Run ``events`` up to admission (errors so far raise normally); None if the client left meanwhile."""
    first = await _next_or_disconnect(events, request)
    if first is None:
        return None
    if not isinstance(first, Admitted):  # pragma: no cover - the service always admits first
        raise RuntimeError("generation did not start with admission")
    return events


async def _collect(events: Events, request: Request) -> list[GenerationEvent] | None:
    """Every event of a non-streaming generation; None (generation stopped) if the client disconnects."""
    out: list[GenerationEvent] = []
    while True:
        try:
            event = await _next_or_disconnect(events, request)
        except StopAsyncIteration:
            return out
        if event is None:
            return None
        out.append(event)


async def respond(
    events: Events,
    request: Request,
    *,
    stream: bool,
    streamed: Callable[[Events], Response],
    whole: Callable[[str, GenerationDone], Response],
) -> Response:
    """The response to a generation: ``streamed(events)`` once admitted (errors before admission raise, so that
    they get their HTTP status), or ``whole(text, done)`` once it is over; 499 when the client left first."""
    if stream:
        admitted = await _admitted(events, request)
        return Response(status_code=CLIENT_CLOSED) if admitted is None else streamed(admitted)
    collected = await _collect(events, request)
    if collected is None:
        return Response(status_code=CLIENT_CLOSED)
    text = "".join(e.text for e in collected if isinstance(e, TextChunk))
    done = next(e for e in collected if isinstance(e, GenerationDone))
    return whole(text, done)


async def encoded(
    events: Events,
    *,
    text: Callable[[str], bytes],
    done: Callable[[GenerationDone], bytes],
    head: bytes = b"",
    tail: bytes = b"",
) -> AsyncGenerator[bytes, None]:
    """A stream's bytes in an API's wire format: ``head``, ``text(chunk)`` for each text chunk, ``done(end)`` for
    the end, ``tail``. Closes ``events`` (which stops the generation) however the stream ends."""
    try:
        if head:
            yield head
        async for event in events:
            if isinstance(event, TextChunk):
                yield text(event.text)
            elif isinstance(event, GenerationDone):
                yield done(event)
        if tail:
            yield tail
    finally:
        await events.aclose()


async def error_terminated(chunks: AsyncIterator[bytes], flavor: ApiFlavor) -> AsyncGenerator[bytes, None]:
    """Pass ``chunks`` through; an error midway becomes the stream's last chunk in the API's own shape."""
    try:
        async for chunk in chunks:
            yield chunk
    except Exception as exc:
        yield stream_error_chunk(as_api_error(exc), flavor)
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
