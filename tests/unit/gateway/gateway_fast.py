"""The gateway's fast test layer: real servers on 127.0.0.1, in one event loop, in milliseconds.

- :class:`Runtime`: the real runtime app (``create_app``) serving a :class:`FakeEngine`, under uvicorn on a free
  port: the upstream a model's pod would be.
- :class:`Scripted`: a raw ASGI upstream that records what it receives and answers chunks chosen by the test
  (exact bytes and chunk boundaries, odd headers).
- :class:`Gateway`: the gateway app under uvicorn, configured as the CLI does it (no Server/Date headers of
  its own); its dispatcher takes catalog events from the test (:func:`slm` and :func:`endpoint_slice` build them
  as the apiserver sends them).

Everything is served by uvicorn rather than an ASGI transport because streaming byte for byte and client
disconnects are only real over a socket. A module with a unique name (not conftest) so tests can import it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import ASGIApp, Receive, Scope, Send

from slm_gateway.activator import Activator
from slm_gateway.app import create_app as create_gateway
from slm_gateway.catalog import Kind, Model, Resync, Upsert
from slm_gateway.dispatch import Dispatcher
from slm_gateway.keys import KeyFile
from slm_gateway.settings import GatewaySettings
from slm_runtime.app import create_app as create_runtime
from slm_runtime.engines.fake import FakeEngine
from slm_runtime.settings import settings_from_sources

__all__ = [
    "MODEL",
    "Gateway",
    "RecordingActions",
    "Runtime",
    "Scripted",
    "endpoint_slice",
    "run",
    "serving",
    "slm",
    "wait_for",
]

T = TypeVar("T")
MODEL = "fake-model"
"""The name every fake runtime serves (what the gateway rewrites the request's model to)."""
SCENARIO_SECONDS = 30.0


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    """Poll ``condition`` on the loop; AssertionError naming ``what`` after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def serving(app: ASGIApp, **config: Any) -> AsyncIterator[int]:
    """Serve ``app`` with uvicorn on 127.0.0.1 (a free port) for the block; the port."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, **config)
    )
    task = asyncio.create_task(server.serve())
    try:
        await wait_for(lambda: server.started or task.done(), "uvicorn to start")
        if task.done():
            task.result()
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield port
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)


@dataclass
class Runtime:
    """A fake-engine runtime served on a port (see the module docstring)."""

    engine: FakeEngine
    parallel: int = 1
    """Slots: the FakeEngine's own count (FakeEngine(parallel))."""
    flags: Mapping[str, Any] = field(default_factory=dict)
    port: int = 0

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[Runtime]:
        base: dict[str, Any] = {
            "model": str(Path("/nonexistent/fake-model.gguf")),
            "model_name": MODEL,
            "parallel": self.parallel,
            "max_queue": 8,
            "request_timeout": 20,
        }
        settings = settings_from_sources({**base, **self.flags}, {})
        app = create_runtime(settings, engine_loader=lambda _: self.engine)
        try:
            async with serving(app) as port, httpx.AsyncClient() as http:
                self.port = port

                async def ready() -> bool:
                    return (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200

                for _ in range(1000):
                    if await ready():
                        break
                    await asyncio.sleep(0.005)
                else:
                    raise AssertionError("the runtime did not get ready")
                yield self
        finally:
            self.engine.gate.set()  # a test that held generations must not leave the slot threads waiting
            self.engine.close()


@dataclass
class Scripted:
    """An upstream answering ``status``, ``headers`` and the body ``chunks`` (one ASGI message each, with
    ``pause`` seconds between), recording every request it gets."""

    chunks: Sequence[bytes] = (b'{"ok": true}',)
    status: int = 200
    headers: Sequence[tuple[bytes, bytes]] = ((b"content-type", b"application/json"),)
    pause: float = 0.0
    fail_after: int | None = None
    """Break the response off (an exception in the app: the server drops the connection) after this many chunks."""
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    cancelled: int = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests.append(
            {"path": scope["path"], "query": scope["query_string"], "headers": dict(scope["headers"]), "body": body}
        )
        await send({"type": "http.response.start", "status": self.status, "headers": list(self.headers)})
        try:
            for index, chunk in enumerate(self.chunks):
                if index == self.fail_after:
                    raise RuntimeError("the scripted upstream breaks off")
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                if self.pause:
                    await asyncio.sleep(self.pause)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[Scripted]:
        async with serving(self, lifespan="off", server_header=False, date_header=False) as port:
            self.port = port
            yield self


def slm(
    namespace: str,
    name: str,
    *,
    phase: str | None = "Ready",
    min_replicas: int | None = None,
    served: str = MODEL,
) -> dict[str, Any]:
    """An SLMDeployment as the apiserver sends it (the fields the gateway reads)."""
    spec: dict[str, Any] = {"model": {"source": f"hf://org/repo/{served}.gguf", "name": served}}
    if min_replicas is not None:
        spec["autoscaling"] = {
            "enabled": True,
            "minReplicas": min_replicas,
            "maxReplicas": 2,
            "targetInflightRequests": 4,
            "scaleToZeroAfter": "5m",
        }
    obj: dict[str, Any] = {
        "apiVersion": "slm-operator.io/v1alpha1",
        "kind": "SLMDeployment",
        "metadata": {"namespace": namespace, "name": name, "creationTimestamp": "2025-01-02T03:04:05Z"},
        "spec": spec,
    }
    if phase is not None:
        obj["status"] = {"phase": phase, "model": {"digest": "sha256:" + "ab" * 32, "sizeBytes": 1234}}
    return obj


def endpoint_slice(
    namespace: str,
    service: str,
    addresses: Sequence[tuple[Any, ...]],
    *,
    name: str | None = None,
) -> dict[str, Any]:
    """An EndpointSlice of ``service`` with one endpoint per (address, port[, ready]) (one port per slice, as
    the test servers differ by port: each port gets its own slice when they differ)."""
    ports = {a[1] for a in addresses}
    assert len(ports) <= 1, "one port per slice: build one slice per upstream"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "namespace": namespace,
            "name": name or f"{service}-{next(iter(ports), 0)}",
            "labels": {"kubernetes.io/service-name": service},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": next(iter(ports), 0), "protocol": "TCP"}],
        "endpoints": [{"addresses": [a[0]], "conditions": {"ready": a[2] if len(a) > 2 else True}} for a in addresses],
    }


class RecordingActions:
    """WakeActions that record the calls (the direct wake mode without a cluster)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def activate(self, namespace: str, name: str) -> None:
        self.calls.append(("activate", namespace, name))

    def deactivate(self, namespace: str, name: str) -> None:
        self.calls.append(("deactivate", namespace, name))


class Gateway:
    """The gateway app served on a port, with its dispatcher (feed it events) and helpers."""

    def __init__(self, *, activator: Activator | None = None, keys_file: Path | None = None, **settings: Any) -> None:
        self.settings = GatewaySettings(**{"wake_timeout": 5.0, **settings})
        self.app = create_gateway(
            self.settings, activator=activator, keys=KeyFile(keys_file, check_every=0.0) if keys_file else None
        )
        self.dispatcher: Dispatcher = self.app.state.gateway.dispatcher
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextlib.asynccontextmanager
    async def run(self) -> AsyncIterator[Gateway]:
        async with serving(self.app, server_header=False, date_header=False) as port:
            self.port = port
            yield self

    def sync(self, slms: Sequence[Mapping[str, Any]] = (), slices: Sequence[Mapping[str, Any]] = ()) -> None:
        """The watches' first lists: these SLMDeployments and EndpointSlices, nothing else."""
        self.dispatcher.apply(Resync(Kind.SLM, None, tuple(slms)))
        self.dispatcher.apply(Resync(Kind.SLICE, None, tuple(slices)))

    def upsert(self, kind: Kind, obj: Mapping[str, Any]) -> None:
        self.dispatcher.apply(Upsert(kind, obj))

    def model(self, id_: str) -> Model:
        model = self.dispatcher.catalog.get(id_)
        assert model is not None, id_
        return model

    def metric(self, name: str, **labels: str) -> float:
        """The sum of the samples named ``name`` whose labels include ``labels``."""
        text = self.dispatcher.metrics.render().decode()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
        )


def run(scenario: Callable[[], Awaitable[T]]) -> T:
    """Run an async scenario with a time limit."""

    async def limited() -> T:
        return await asyncio.wait_for(scenario(), SCENARIO_SECONDS)

    return asyncio.run(limited())


def sse_data(text: str) -> list[Any]:
    """The JSON data of an SSE body's events ([DONE] kept as the string)."""
    events = [line.removeprefix("data: ") for line in text.split("\n\n") if line.startswith("data: ")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]
