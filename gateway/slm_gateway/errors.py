"""The errors the gateway answers with, in each API's own shape.

The shapes and most classes are the runtime's (slm_runtime.errors: Ollama ``{"error": "..."}``, OpenAI
``{"error": {"message", "type", "param", "code"}}``), so a client sees the same error from the gateway as from a
model it reaches directly; the gateway adds the few cases only a proxy has.
"""

from __future__ import annotations

import json

from starlette.types import Send

from slm_runtime.auth import flavor_of
from slm_runtime.errors import (
    APIError,
    ApiFlavor,
    AuthenticationError,
    BodyTooLargeError,
    InvalidRequestError,
    MethodNotAllowedError,
    ModelNotFoundError,
    ModelNotReadyError,
    RouteNotFoundError,
    ServerBusyError,
    error_body,
)

__all__ = [
    "APIError",
    "ApiFlavor",
    "AuthenticationError",
    "BodyTooLargeError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "RefusedError",
    "RouteNotFoundError",
    "ServerBusyError",
    "UpstreamError",
    "error_bytes",
    "flavor_of",
    "send_error",
]


class UpstreamError(APIError):
    """No model pod could be reached (connection refused or reset, timeout)."""

    status = 502
    type = "server_error"
    code = "upstream_unavailable"


class RefusedError(Exception):
    """A request the gateway will not forward: the error to answer and, for a 503, when to retry."""

    def __init__(self, error: APIError, retry_after: int | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def error_bytes(err: APIError, flavor: ApiFlavor) -> bytes:
    return json.dumps(error_body(err, flavor)).encode()


async def send_error(
    send: Send, err: APIError, flavor: ApiFlavor, *, retry_after: int | None = None, authenticate: bool = False
) -> None:
    """Answer ``err`` as a whole JSON response on a raw ASGI ``send``."""
    body = error_bytes(err, flavor)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if retry_after is not None:
        headers.append((b"retry-after", str(retry_after).encode()))
    if authenticate:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
