"""Request bodies: a size limit (HTTP 413) and JSON assumed when a client sends no usable content type.

Ollama parses any POST body as JSON, so ``curl -d '{...}'`` (form-encoded by default) works against it; this
middleware keeps that working by presenting such bodies to the app as ``application/json``.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slm_runtime.auth import flavor_of
from slm_runtime.errors import BodyTooLargeError, error_body

__all__ = ["BodyLimitMiddleware"]

_JSON_ASSUMED = {b"", b"application/x-www-form-urlencoded", b"text/plain"}


class _TooLargeError(Exception):
    pass


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def _reject(self, scope: Scope, send: Send) -> None:
        err = BodyTooLargeError(
            f"request body larger than {self.max_body_bytes} bytes: send less or raise --max-body-bytes",
        )
        body = json.dumps(error_body(err, flavor_of(scope["path"]))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in {"GET", "HEAD", "OPTIONS"}:
            await self.app(scope, receive, send)
            return
        headers = list(scope.get("headers") or [])
        content_type = b""
        for name, value in headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                await self._reject(scope, send)
                return
            if name == b"content-type":
                content_type = value.split(b";")[0].strip().lower()
        if content_type in _JSON_ASSUMED:
            headers = [(n, v) for n, v in headers if n != b"content-type"]
            headers.append((b"content-type", b"application/json"))
            scope = {**scope, "headers": headers}

        received = 0
        too_large = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    too_large = True
                    raise _TooLargeError
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if too_large:
                return  # the 413 below replaces whatever the app answers
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _TooLargeError:
            pass
        except Exception:
            if not too_large:
                raise
        if too_large and not started:
            await self._reject(scope, send)
