"""HTTP plumbing shared by both APIs: the response to the answers of a request (:func:`respond`: streamed once one
choice is admitted, or whole; HTTP 499 when the client left first), disconnect-aware collection, errors midway as a
stream's last chunk, and a streaming response that always closes its generator (which stops the engine and frees the
slot)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from slm_runtime.answers import Answer, AnswerEvent, Delta, Finished
from slm_runtime.errors import ApiFlavor, as_api_error, stream_error_chunk
from slm_runtime.generation import Admitted
from slm_runtime.residency import Residency

__all__ = [
    "CLIENT_CLOSED",
    "ClosingStreamingResponse",
    "Events",
    "StreamEncoder",
    "encoded",
    "error_terminated",
    "held",
    "respond",
    "rfc3339_now",
]

CLIENT_CLOSED = 499
"""The status of a response to a client that went away before it started (nginx's name for it)."""

_DISCONNECT_POLL_SECONDS = 0.25

Events = AsyncGenerator[tuple[int, AnswerEvent], None]
"""The events of a request's choices, each with its choice's index (:func:`slm_runtime.answers.merged`)."""


def rfc3339_now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


class ClosingStreamingResponse(StreamingResponse):
    """A StreamingResponse that closes its body iterator however the response ends, then calls ``on_close``.

    Its status line and headers go out with its first chunk (a generation's first token, written right after them),
    not before it: the client reads both at once after the first decode step rather than the headers in the middle
    of it, where on a small machine its work and the server's took CPU from the step that makes the first token.
    (Errors before the first token still end the stream as its only chunk; those before admission never start
    one, see :func:`respond`.)
    """

    on_close: Callable[[], None] | None = None

    async def stream_response(self, send: Send) -> None:
        chunks = aiter(self.body_iterator)
        first = await anext(chunks, None)
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        if first is not None:
            await send({"type": "http.response.body", "body": _as_bytes(first, self.charset), "more_body": True})
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": _as_bytes(chunk, self.charset), "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with contextlib.suppress(Exception):
                    await close()
            if self.on_close is not None:
                self.on_close()


def _as_bytes(chunk: str | bytes | memoryview, charset: str) -> bytes | memoryview:
    return chunk.encode(charset) if isinstance(chunk, str) else chunk


async def held(residency: Residency, keep_alive: float | None, response: Awaitable[Response]) -> Response:
    """``response``, holding the model from now until it is sent (a stream: until its last chunk); then the
    request's ``keep_alive`` applies (see :mod:`slm_runtime.residency`)."""
    residency.hold()
    try:
        answer = await response
    except BaseException:
        residency.release(keep_alive)
        raise
    if isinstance(answer, ClosingStreamingResponse):
        answer.on_close = lambda: residency.release(keep_alive)
    else:
        residency.release(keep_alive)
    return answer


async def _until_disconnect(request: Request) -> None:
    while not await request.is_disconnected():
        await asyncio.sleep(_DISCONNECT_POLL_SECONDS)


async def _next_or_disconnect(events: Events, request: Request) -> tuple[int, AnswerEvent] | None:
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
    """Run ``events`` up to a first admission (errors so far raise normally); None if the client left meanwhile."""
    first = await _next_or_disconnect(events, request)
    if first is None:
        return None
    if not isinstance(first[1], Admitted):  # pragma: no cover - the service always admits first
        raise RuntimeError("generation did not start with admission")
    return events


async def _collect(events: Events, request: Request, choices: int) -> list[Answer] | None:
    """The answer of every choice, in order; None (generations stopped) if the client disconnects."""
    answers: dict[int, Answer] = {}
    while True:
        try:
            event = await _next_or_disconnect(events, request)
        except StopAsyncIteration:
            return [answers[index] for index in range(choices)]
        if event is None:
            return None
        index, item = event
        if isinstance(item, Finished):
            answers[index] = item.answer


async def respond(
    events: Events,
    request: Request,
    *,
    stream: bool,
    streamed: Callable[[Events], Response],
    whole: Callable[[list[Answer]], Response],
    choices: int = 1,
) -> Response:
    """The response to a request's answers: ``streamed(events)`` once a choice is admitted (errors before that
    raise, so that they get their HTTP status), or ``whole(answers)`` once all ``choices`` are over; 499 when the
    client left first."""
    if stream:
        admitted = await _admitted(events, request)
        return Response(status_code=CLIENT_CLOSED) if admitted is None else streamed(admitted)
    answers = await _collect(events, request, choices)
    if answers is None:
        return Response(status_code=CLIENT_CLOSED)
    return whole(answers)


class StreamEncoder(Protocol):
    """An API's stream format: bytes for its start, for each delta or end of a choice, and for its end."""

    def head(self) -> bytes: ...

    def delta(self, index: int, delta: Delta) -> bytes: ...

    def finished(self, index: int, answer: Answer) -> bytes: ...

    def tail(self) -> bytes: ...


async def encoded(events: Events, encoder: StreamEncoder) -> AsyncGenerator[bytes, None]:
    """A stream's bytes in an API's wire format. Closes ``events`` (which stops the generations) however the stream
    ends. The head (a chat's role chunks) goes out with the first data, so the first chunk sent is the first token's."""
    try:
        head = encoder.head()
        async for index, event in events:
            if isinstance(event, Delta):
                data = encoder.delta(index, event)
            elif isinstance(event, Finished):
                data = encoder.finished(index, event.answer)
            else:
                continue
            if data:
                yield head + data if head else data
                head = b""
        tail = encoder.tail()
        if head or tail:
            yield head + tail
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
