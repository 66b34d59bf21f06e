"""The fast test layer: the real app (``create_app``) serving the fake engine, in process, in milliseconds.

:func:`serve` runs a scenario against a :class:`FastApp`: the app's lifespan has loaded the fake engine (the
same load, warm-up and delivery path as production) and ``app.client`` talks to it through
``httpx.ASGITransport``. :meth:`FastApp.hang_up` drives one request at the ASGI level instead, for what httpx's
transport cannot do: a client that disconnects midway.

A module with a unique name (rather than conftest) so that test modules can import it unambiguously.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from slm_runtime.app import create_app
from slm_runtime.engines.fake import FakeEngine
from slm_runtime.service import EngineLoader, ModelService
from slm_runtime.settings import settings_from_sources

__all__ = ["API_KEY", "MODEL", "FastApp", "serve", "sse_events", "wait_for"]

T = TypeVar("T")

MODEL = "fake-model"
API_KEY = "sk-fast-key"
_SCENARIO_SECONDS = 20.0


def _with_state(app: ASGIApp, state: Mapping[str, Any]) -> ASGIApp:
    """What an ASGI server does with the lifespan's state: a shallow copy of it in every request's scope."""

    async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "state": dict(state)}
        await app(scope, receive, send)

    return with_state


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` on the loop until it holds; AssertionError naming ``what`` after ``timeout`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


class FastApp:
    """The app with its lifespan running, its model service, the fake engine and an httpx client."""

    def __init__(self, engine: FakeEngine, flags: Mapping[str, Any], loader: EngineLoader | None = None) -> None:
        base: dict[str, Any] = {
            "model": str(Path("/nonexistent/fake-model.gguf")),
            "model_name": MODEL,
            "parallel": 1,
            "max_queue": 4,
            "request_timeout": 10,
        }
        base.update(flags)
        self.settings = settings_from_sources(base, {})
        self.engine = engine
        self.app = create_app(self.settings, engine_loader=loader or (lambda _: engine))
        self._lifespan = self.app.router.lifespan_context(self.app)
        self.asgi: ASGIApp = self.app
        self.service: ModelService
        self.client: httpx.AsyncClient

    async def __aenter__(self) -> FastApp:
        state = await self._lifespan.__aenter__()
        assert state is not None
        self.service = state["service"]
        self.asgi = _with_state(self.app, state)
        headers = {"Authorization": f"Bearer {API_KEY}"} if self.settings.server.api_key else {}
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False)  # as a server: a 500
        self.client = httpx.AsyncClient(transport=transport, base_url="http://slm.test", headers=headers)
        try:
            await wait_for(lambda: self.service.ready or self.service.load_error is not None, "the model to load")
        except BaseException:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        await self._lifespan.__aexit__(None, None, None)

    async def hold_slot(self) -> asyncio.Task[httpx.Response]:
        """Close the engine's gate and start a whole-answer generate request, which holds a slot (and waits)
        until the gate opens again; the request's task."""
        self.engine.gate.clear()
        body = {"model": MODEL, "prompt": "Hi", "stream": False}
        running = asyncio.create_task(self.client.post("/api/generate", json=body))
        await wait_for(lambda: self.service.scheduler.running == 1, "a request to hold the slot")
        return running

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        total = 0.0
        for family in text_string_to_metric_families(self.service.metrics.render().decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    async def hang_up(
        self, path: str, body: dict[str, Any], *, after: Callable[[list[bytes]], bool]
    ) -> tuple[int, list[bytes]]:
        """POST ``body`` and disconnect as soon as ``after(body chunks so far)`` holds (checked on each message
        and every few milliseconds); the status sent (0 if none) and the body chunks received."""
        received: list[bytes] = []
        status = 0
        hung_up = asyncio.Event()
        sent_body = False
        headers = [(b"content-type", b"application/json"), (b"host", b"slm.test")]
        if self.settings.server.api_key:
            headers.append((b"authorization", f"Bearer {API_KEY}".encode()))

        async def receive() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": json.dumps(body).encode(), "more_body": False}
            await hung_up.wait()
            return {"type": "http.disconnect"}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif message["type"] == "http.response.body" and message.get("body"):
                received.append(message["body"])
            if after(received):
                hung_up.set()

        async def watch() -> None:
            while not after(received):
                await asyncio.sleep(0.005)
            hung_up.set()

        scope: Scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "root_path": "",
            "query_string": b"",
            "headers": headers,
            "client": ("127.0.0.1", 40000),
            "server": ("slm.test", 80),
        }
        watcher = asyncio.create_task(watch())
        try:
            await self.asgi(scope, receive, send)
        finally:
            watcher.cancel()
        return status, received


def serve(
    scenario: Callable[[FastApp], Awaitable[T]],
    engine: FakeEngine | None = None,
    *,
    loader: EngineLoader | None = None,
    **flags: Any,
) -> T:
    """Run ``scenario`` against the app serving ``engine`` (a default FakeEngine) with these settings flags;
    ``loader`` replaces the one that hands the engine over."""

    async def run() -> T:
        fake = engine or FakeEngine(int(flags.get("parallel", 1)))
        try:
            async with FastApp(fake, flags, loader) as app:
                return await asyncio.wait_for(scenario(app), _SCENARIO_SECONDS)
        finally:
            fake.close()  # idempotent: the app closed it already unless the loader did not hand it over

    return asyncio.run(run())


def sse_events(text: str) -> list[str]:
    """The data fields of an SSE body, in order."""
    return [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
