"""Forwarding one model request: read the body, check the key, find the model, hold or pick a pod, stream back.

:class:`ModelProxy` is a raw ASGI app (each model route of the gateway mounts it) so that it controls the two
things a proxy must get exactly right:

- Bytes: the response body is sent on as the pod's HTTP stack delivers it (``aiter_raw``: SSE events and NDJSON
  lines are never decoded or re-encoded), with the pod's status and headers less the hop-by-hop ones.
- Cancellation: a task watches for the client's disconnect while the request is held and while it streams; on
  disconnect the forwarding task is cancelled, which closes the connection to the pod, and the runtime stops the
  generation as it does for any client that goes away.

A pod that refuses the connection is skipped for the next one (the request has not reached it); any other
failure before the response starts is a 502 in the API's shape, and one after it ends the response early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import httpx
from starlette.types import Message, Receive, Scope, Send

from slm_gateway.body import BodyError, parse_body, prefix_text
from slm_gateway.catalog import Model
from slm_gateway.dispatch import Dispatcher
from slm_gateway.errors import (
    APIError,
    ApiFlavor,
    AuthenticationError,
    BodyTooLargeError,
    InvalidRequestError,
    ModelNotFoundError,
    RefusedError,
    UpstreamError,
    flavor_of,
    send_error,
)
from slm_gateway.keys import API_KEY_HEADER, SEND_A_KEY, KeyRing

__all__ = ["CONNECT_ATTEMPTS", "HOP_BY_HOP", "ClientGoneError", "ModelProxy", "forwarded_headers", "response_headers"]

log = logging.getLogger(__name__)

HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
"""Headers about one connection, never forwarded (RFC 9110 7.6.1)."""
_NOT_FORWARDED = HOP_BY_HOP | {b"host", b"content-length", b"expect"}
_API_KEY_HEADER = API_KEY_HEADER.encode()
CONNECT_ATTEMPTS = 3
"""Pods tried for one request when connections are refused (a pod going away before its endpoint does)."""
CLIENT_CLOSED = 499
"""The status a request is counted with when the client went away first (nginx's convention)."""


class ClientGoneError(Exception):
    """The client disconnected while the gateway read its request."""


class _UpstreamBrokeError(Exception):
    """The pod's response broke off midway (logged and counted); the client's response is left incomplete."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def forwarded_headers(headers: Iterable[tuple[bytes, bytes]], *, keep_authorization: bool) -> list[tuple[bytes, bytes]]:
    """The request headers sent to the pod: all but the hop-by-hop ones, Host and Content-Length (set anew),
    X-API-Key (the gateway's own key header), and Authorization unless the client's key is meant for the model
    (no gateway keys)."""
    return [
        (name, value)
        for name, value in headers
        if name not in _NOT_FORWARDED and name != _API_KEY_HEADER and (keep_authorization or name != b"authorization")
    ]


def response_headers(raw: Iterable[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The pod's response headers as sent to the client: lower-case names, no hop-by-hop ones."""
    return [(name.lower(), value) for name, value in raw if name.lower() not in HOP_BY_HOP]


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; BodyTooLargeError past ``limit`` bytes, ClientGoneError on a disconnect."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGoneError()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError(f"the request body is larger than {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _disconnected(receive: Receive) -> None:
    """Return when the client disconnects (the body has been read: nothing else can arrive)."""
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers") or ():
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class ModelProxy:
    """The ASGI app of the model routes; see the module docstring."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        keys: Callable[[], KeyRing],
        client: Callable[[], httpx.AsyncClient],
    ) -> None:
        self._dispatcher = dispatcher
        self._keys = keys
        self._client = client
        self._settings = dispatcher.settings
        self._metrics = dispatcher.metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        arrived = time.perf_counter()
        flavor = flavor_of(scope["path"])
        try:
            model, payload, prefix, keys = await self._admit(scope, receive)
        except ClientGoneError:
            return
        except APIError as err:
            self._metrics.requests.labels("", str(err.status)).inc()
            await send_error(send, err, flavor, authenticate=isinstance(err, AuthenticationError))
            return
        headers = forwarded_headers(scope.get("headers") or (), keep_authorization=not keys.enabled)
        status = CLIENT_CLOSED
        self._dispatcher.begin(model)
        forwarding = asyncio.create_task(self._forward(scope, send, model, payload, prefix, headers, arrived, flavor))
        watching = asyncio.create_task(_disconnected(receive))
        try:
            await asyncio.wait((forwarding, watching), return_when=asyncio.FIRST_COMPLETED)
            if forwarding.done():
                try:
                    status = forwarding.result()
                except _UpstreamBrokeError as broken:
                    # Returning without the last body message makes the server close the connection, so the
                    # client sees a broken response rather than a short one that looks whole.
                    status = broken.status
        finally:
            for task in (forwarding, watching):
                task.cancel()
            await asyncio.gather(forwarding, watching, return_exceptions=True)  # raised above if it mattered
            self._dispatcher.end(model)
            self._metrics.requests.labels(model.id, str(status)).inc()

    async def _admit(self, scope: Scope, receive: Receive) -> tuple[Model, bytes, str | None, KeyRing]:
        """The model, the body to forward and the prompt prefix of a request; APIError when it is refused."""
        length = _header(scope, b"content-length")
        if length and length.isdigit() and int(length) > self._settings.max_body_bytes:
            raise BodyTooLargeError(f"the request body is larger than {self._settings.max_body_bytes} bytes")
        raw = await read_body(receive, self._settings.max_body_bytes)
        keys = self._keys()
        authorization, api_key = _header(scope, b"authorization"), _header(scope, _API_KEY_HEADER)
        access = keys.access(authorization, api_key)
        if access is None:
            what = "missing" if authorization is None and api_key is None else "invalid"
            raise AuthenticationError(f"{what} API key: {SEND_A_KEY}")
        try:
            body = parse_body(raw)
        except BodyError as exc:
            raise InvalidRequestError(str(exc)) from None
        requested = body.model
        if requested is None:
            raise InvalidRequestError('model is required: set "model" to a name that /v1/models lists', param="model")
        catalog = self._dispatcher.catalog
        model = catalog.resolve(requested, access.visible(catalog.models.values()) if keys.enabled else None)
        if model is None:
            raise ModelNotFoundError(requested)
        prefix = prefix_text(body.values, self._settings.prefix_chars) if self._settings.prefix_affinity else None
        return model, body.with_model(model.served_name), prefix, keys

    async def _forward(
        self,
        scope: Scope,
        send: Send,
        model: Model,
        payload: bytes,
        prefix: str | None,
        headers: list[tuple[bytes, bytes]],
        arrived: float,
        flavor: ApiFlavor,
    ) -> int:
        """Forward to a pod and stream its answer back; the status the client got."""
        failed: list[str] = []
        target = scope["path"] + (f"?{scope['query_string'].decode('latin-1')}" if scope.get("query_string") else "")
        client = self._client()
        for _ in range(CONNECT_ATTEMPTS):
            try:
                endpoint = await self._dispatcher.acquire(model, prefix, failed)
            except RefusedError as refusal:
                await send_error(send, refusal.error, flavor, retry_after=refusal.retry_after)
                return refusal.error.status
            try:
                request = client.build_request(scope["method"], endpoint.url + target, headers=headers, content=payload)
                try:
                    response = await client.send(request, stream=True)
                except httpx.ConnectError as exc:
                    self._upstream_error(model, "connect", endpoint.url, exc)
                    failed.append(endpoint.url)
                    continue
                except httpx.HTTPError as exc:
                    reason = "timeout" if isinstance(exc, httpx.TimeoutException) else "protocol"
                    self._upstream_error(model, reason, endpoint.url, exc)
                    await send_error(send, UpstreamError(f'model "{model.id}" did not answer: {exc}'), flavor)
                    return UpstreamError.status
                try:
                    await self._relay(response, send, model, arrived)
                finally:
                    await response.aclose()
                return response.status_code
            finally:
                self._dispatcher.release(endpoint)
        error = UpstreamError(f'no pod of model "{model.id}" accepted the connection')
        await send_error(send, error, flavor, retry_after=self._settings.retry_after)
        return error.status

    async def _relay(self, response: httpx.Response, send: Send, model: Model, arrived: float) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw),
            }
        )
        first = True
        try:
            async for chunk in response.aiter_raw():
                if first:
                    self._metrics.time_to_first_byte.labels(model.id).observe(time.perf_counter() - arrived)
                    first = False
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except httpx.HTTPError as exc:
            self._upstream_error(model, "protocol", str(response.url), exc)
            raise _UpstreamBrokeError(response.status_code) from exc
        if first:
            self._metrics.time_to_first_byte.labels(model.id).observe(time.perf_counter() - arrived)
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    def _upstream_error(self, model: Model, reason: str, url: str, exc: BaseException) -> None:
        self._metrics.upstream_errors.labels(model.id, reason).inc()
        log.warning("model %s at %s: %s (%s)", model.id, url, reason, exc)
