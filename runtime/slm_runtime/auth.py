"""Bearer API key on every route but health, metrics and Ollama's ``GET /`` liveness line.

The key is compared in constant time; a missing or wrong key gets a 401 in the API's own error shape (OpenAI's
for /v1, Ollama's elsewhere) with ``WWW-Authenticate: Bearer``.
"""

from __future__ import annotations

import hmac
import json

from starlette.types import ASGIApp, Receive, Scope, Send

from slm_runtime.errors import ApiFlavor, AuthenticationError, error_body

__all__ = ["PUBLIC_PATHS", "ApiKeyMiddleware", "flavor_of"]

PUBLIC_PATHS = frozenset({"/", "/healthz", "/readyz", "/metrics"})


def flavor_of(path: str) -> ApiFlavor:
    """Which API's error shape a path answers with."""
    return "openai" if path == "/v1" or path.startswith("/v1/") else "ollama"


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, *, api_key: str) -> None:
        self.app = app
        self._expected = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        given = b""
        for name, value in scope.get("headers") or []:
            if name == b"authorization":
                given = value
                break
        scheme, _, token = given.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected):
            await self.app(scope, receive, send)
            return
        what = "missing" if not given else "invalid"
        err = AuthenticationError(
            f"{what} API key: send the header 'Authorization: Bearer <key>' with the server's key"
        )
        body = json.dumps(error_body(err, flavor_of(scope["path"]))).encode()
        await send(
            {
                "type": "http.response.start",
                "status": err.status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
