"""Stand-ins for slm-gateway and the apiserver's service proxy, served over real HTTP on 127.0.0.1.

The gateway's API is the runtime's, so the runtime's own app serving the fake engine stands in for it, under
uvicorn on a thread. :func:`apiserver` wraps an app the way the apiserver's service proxy reaches a Service:
bearer-token check, a ``/api/v1/namespaces/<ns>/services/<name>:<port>/proxy`` prefix, ``Status`` errors, and the
caller's Authorization header removed once it has authenticated (the gateway key then arrives as X-API-Key, which
this stand-in turns into the runtime's Authorization header, as the gateway does).

A module with a unique name (rather than conftest) so that test modules can import it unambiguously.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from slm_operator.local.remote import GATEWAY_KEY_HEADER, ServiceRef, service_proxy_url
from slm_operator.local.server import free_port
from slm_runtime.app import create_app
from slm_runtime.engines.fake import FakeEngine
from slm_runtime.settings import settings_from_sources

__all__ = ["REPLY", "apiserver", "kubeconfig", "runtime_app", "serving"]

REPLY = "Hello from the cluster."


def runtime_app(
    model: str, *, api_key: str | None = None, load_seconds: float = 0.0, request_timeout: float = 10
) -> ASGIApp:
    """The runtime serving ``model`` with the fake engine. Loading takes ``load_seconds``; meanwhile a request is
    held up to ``request_timeout``, then answered 503 with Retry-After (as the gateway does while a model wakes)."""
    flags: dict[str, object] = {
        "model": str(Path("/nonexistent/fake-model.gguf")),
        "model_name": model,
        "parallel": 1,
        "max_queue": 4,
        "request_timeout": request_timeout,
    }
    if api_key:
        flags["api_key"] = api_key
    settings = settings_from_sources(flags, {})

    def load(_: object) -> FakeEngine:
        time.sleep(load_seconds)
        return FakeEngine(reply=REPLY)

    return create_app(settings, engine_loader=load)


@contextmanager
def serving(app: ASGIApp) -> Iterator[str]:
    """Serve ``app`` on a free loopback port for the block; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="gateway-stand-in", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the stand-in server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)


async def _status(send: Send, code: int, reason: str, message: str) -> None:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    await send({"type": "http.response.start", "status": code, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps({**body, "code": code}).encode()})


def apiserver(app: ASGIApp, service: ServiceRef, token: str) -> ASGIApp:
    """``app`` behind a service proxy at ``service``'s path, for callers bearing ``token``."""
    prefix = service_proxy_url("", service)
    key_header = GATEWAY_KEY_HEADER.lower().encode()

    async def proxy(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)  # the lifespan
            return
        headers = dict(scope["headers"])
        if headers.get(b"authorization") != f"Bearer {token}".encode():
            await _status(send, 401, "Unauthorized", "Unauthorized")
            return
        path: str = scope["path"]
        if not path.startswith(prefix + "/"):
            await _status(send, 404, "NotFound", f"the server could not find the requested resource ({path})")
            return
        forwarded = [(k, v) for k, v in scope["headers"] if k not in (b"authorization", key_header)]
        if key_header in headers:
            forwarded.append((b"authorization", b"Bearer " + headers[key_header]))
        inner = path.removeprefix(prefix)
        scope = {**scope, "path": inner, "raw_path": inner.encode(), "headers": forwarded}
        await app(scope, receive, send)

    return proxy


def kubeconfig(path: Path, server: str, *, token: str, context: str = "stand-in") -> Path:
    """A kubeconfig whose current context reaches ``server`` with ``token``."""
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}],
        "current-context": context,
    }
    path.write_text(json.dumps(document))
    return path
