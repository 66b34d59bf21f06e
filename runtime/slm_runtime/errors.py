"""Typed API errors, the one exception-to-status mapping, and their Ollama and OpenAI renderings.

Handlers raise an :class:`APIError` subclass; :func:`as_api_error` turns anything else into a 500 without
looking at exception text. Each API renders the same error its own way: Ollama ``{"error": "..."}``,
OpenAI ``{"error": {"message", "type", "param", "code"}}``; streaming responses emit it as their last chunk.
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

__all__ = [
    "OLLAMA_SERVER_BUSY",
    "RETRY_AFTER_SECONDS",
    "APIError",
    "ApiFlavor",
    "AuthenticationError",
    "BodyTooLargeError",
    "ContextLengthExceededError",
    "EmbeddingsUnsupportedError",
    "InternalError",
    "InvalidRequestError",
    "MethodNotAllowedError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "OperationNotSupportedError",
    "RequestTimeoutError",
    "RouteNotFoundError",
    "ServerBusyError",
    "as_api_error",
    "error_body",
    "ollama_error_body",
    "openai_error_body",
    "stream_error_chunk",
]

log = logging.getLogger(__name__)

ApiFlavor = Literal["ollama", "openai"]

OLLAMA_SERVER_BUSY = "server busy, please try again.  maximum pending requests exceeded"

RETRY_AFTER_SECONDS = 1
"""The ``Retry-After`` of every 503 (busy, loading, stopping)."""


class APIError(Exception):
    """An error a client sees. Subclasses fix the HTTP status and the OpenAI type/code (one class per status)."""

    status: int = 500
    type: str = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequestError(APIError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    code = "context_length_exceeded"


class EmbeddingsUnsupportedError(InvalidRequestError):
    code = "embeddings_unsupported"


class AuthenticationError(APIError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class OperationNotSupportedError(InvalidRequestError):
    """A model-management call (create, copy, push, delete) this single-model server refuses."""

    status = 403


class ModelNotFoundError(APIError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(f'model "{model}" not found, try pulling it first', param="model")


class RouteNotFoundError(APIError):
    """No route has the request's path."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowedError(APIError):
    """The path exists, not with the request's method."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class BodyTooLargeError(APIError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class ServerBusyError(APIError):
    status = 503
    type = "server_error"
    code = "server_busy"

    def __init__(self) -> None:
        super().__init__(OLLAMA_SERVER_BUSY)


class ModelNotReadyError(APIError):
    status = 503
    type = "server_error"
    code = "model_not_ready"


class RequestTimeoutError(APIError):
    status = 504
    type = "server_error"
    code = "timeout"


class InternalError(APIError):
    status = 500
    type = "server_error"
    code = "internal_error"


def as_api_error(exc: BaseException) -> APIError:
    """The API error to report for ``exc``: itself when typed, else a logged 500."""
    if isinstance(exc, APIError):
        return exc
    log.error("unexpected error while serving a request", exc_info=exc)
    return InternalError(f"internal error: {type(exc).__name__}")


def ollama_error_body(err: APIError) -> dict[str, Any]:
    return {"error": err.message}


def openai_error_body(err: APIError) -> dict[str, Any]:
    return {"error": {"message": err.message, "type": err.type, "param": err.param, "code": err.code}}


def error_body(err: APIError, flavor: ApiFlavor) -> dict[str, Any]:
    return openai_error_body(err) if flavor == "openai" else ollama_error_body(err)


def stream_error_chunk(err: APIError, flavor: ApiFlavor) -> bytes:
    """The last chunk of a stream that failed midway: an NDJSON line or an SSE event."""
    body = json.dumps(error_body(err, flavor))
    if flavor == "openai":
        return f"data: {body}\n\n".encode()
    return (body + "\n").encode()
