"""The ASGI middlewares on a trivial app: bearer auth by route and scheme, body size limit, JSON assumed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from starlette.types import Message, Receive, Scope, Send

from slm_runtime.auth import ApiKeyMiddleware
from slm_runtime.limits import BodyLimitMiddleware


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    """Reads the whole body and answers with its size and the content type it saw."""
    size = 0
    while True:
        message = await receive()
        size += len(message.get("body", b""))
        if not message.get("more_body"):
            break
    content_type = dict(scope["headers"]).get(b"content-type", b"").decode()
    body = json.dumps({"size": size, "content_type": content_type}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def call(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes], method: str = "POST"
) -> tuple[int, dict[str, Any]]:
    async def run() -> tuple[int, dict[str, Any]]:
        pending = list(chunks) or [b""]
        sent: list[Message] = []

        async def receive() -> Message:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending)}

        async def send(message: Message) -> None:
            sent.append(message)

        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        await app(scope, receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return int(sent[0]["status"]), json.loads(body)

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("header", "status"),
    [
        (b"Bearer k3y", 200),
        (b"bearer k3y", 200),
        (b"Bearer wrong", 401),
        (b"Basic k3y", 401),
        (b"k3y", 401),
        (None, 401),
    ],
)
def test_bearer_key(header: bytes | None, status: int) -> None:
    app = ApiKeyMiddleware(echo, api_key="k3y")
    headers = [(b"authorization", header)] if header is not None else []
    assert call(app, "/api/generate", headers, [b"{}"])[0] == status


def test_auth_errors_take_the_routes_shape_and_health_is_public() -> None:
    app = ApiKeyMiddleware(echo, api_key="k3y")
    status, body = call(app, "/v1/models", [], [], method="GET")
    assert status == 401 and body["error"]["code"] == "invalid_api_key"
    status, body = call(app, "/api/tags", [], [], method="GET")
    assert status == 401 and "missing API key" in body["error"]
    for path in ("/healthz", "/readyz", "/metrics", "/"):
        assert call(app, path, [], [], method="GET")[0] == 200


def test_body_limit_by_length_header_and_by_counting() -> None:
    app = BodyLimitMiddleware(echo, max_body_bytes=1024)
    big = [(b"content-length", b"2048"), (b"content-type", b"application/json")]
    status, body = call(app, "/api/chat", big, [b"x" * 2048])
    assert status == 413 and "1024 bytes" in body["error"]
    status, body = call(app, "/v1/completions", [(b"content-type", b"application/json")], [b"x" * 600] * 2)
    assert status == 413 and body["error"]["code"] == "request_too_large"
    assert call(app, "/api/chat", [(b"content-type", b"application/json")], [b"x" * 1000])[0] == 200


def test_form_or_missing_content_type_is_read_as_json() -> None:
    app = BodyLimitMiddleware(echo, max_body_bytes=1024)
    for headers in ([], [(b"content-type", b"application/x-www-form-urlencoded")]):
        assert call(app, "/api/generate", headers, [b"{}"])[1]["content_type"] == "application/json"
    kept = call(app, "/api/generate", [(b"content-type", b"application/json; charset=utf-8")], [b"{}"])
    assert kept[1]["content_type"] == "application/json; charset=utf-8"
