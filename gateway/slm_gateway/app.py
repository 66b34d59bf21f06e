"""The gateway's ASGI app: ``create_app(settings)`` wires the routes, the dispatcher, the keys and the catalog feed.

Routes:

- Model routes, forwarded by :class:`~slm_gateway.proxy.ModelProxy` to the model the body names: OpenAI
  ``/v1/chat/completions``, ``/v1/completions``, ``/v1/embeddings``; Ollama ``/api/chat``, ``/api/generate``,
  ``/api/embed``, ``/api/embeddings``, ``/api/show``, ``/api/pull``.
- Answered by the gateway from the catalog: ``/v1/models`` (and ``/v1/models/{id}``), ``/api/tags``,
  ``/api/ps``, ``/api/version``, Ollama's ``GET /`` liveness line.
- ``/healthz`` (the process is alive), ``/readyz`` (the catalog has synced: 503 before), ``/metrics``.

The catalog feed (the Kubernetes watch in production, nothing in tests, which apply events themselves) and the
activator start and stop with the app's lifespan; so does the pooled HTTP client of the model pods.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from slm_gateway.activator import Activator, MetricActivator
from slm_gateway.catalog import Event
from slm_gateway.dispatch import Dispatcher
from slm_gateway.errors import (
    APIError,
    AuthenticationError,
    MethodNotAllowedError,
    ModelNotFoundError,
    RouteNotFoundError,
    error_bytes,
    flavor_of,
)
from slm_gateway.keys import API_KEY_HEADER, SEND_A_KEY, Access, KeyFile
from slm_gateway.listing import model_card, ollama_ps, ollama_tags, openai_models
from slm_gateway.metrics import GatewayMetrics
from slm_gateway.proxy import ModelProxy
from slm_gateway.settings import GatewaySettings

__all__ = ["MODEL_ROUTES", "CatalogFeed", "Gateway", "create_app"]

MODEL_ROUTES = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/api/chat",
    "/api/generate",
    "/api/embed",
    "/api/embeddings",
    "/api/show",
    "/api/pull",
)
OLLAMA_RUNNING = "Ollama is running"  # what Ollama's GET / answers; clients probe it


class CatalogFeed(Protocol):
    """Where catalog events come from (slm_gateway.kube.KubeWatch in production)."""

    def start(self, apply: Callable[[Event], None]) -> None:
        """Start delivering events by calling ``apply`` on the event loop."""

    def stop(self) -> None: ...


def _version() -> str:
    try:
        return importlib.metadata.version("slm-operator")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def _http_client(settings: GatewaySettings) -> httpx.AsyncClient:
    """One pooled client for every pod: no limit on connections (the pods' queues bound the load), no read
    timeout (a generation may stream for as long as the runtime allows), a connect timeout."""
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(None, connect=settings.connect_timeout),
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=512, keepalive_expiry=30.0),
        follow_redirects=False,
        trust_env=False,
    )
    for name in ("user-agent", "accept-encoding", "accept"):  # forward the client's own, add none
        del client.headers[name]
    return client


@dataclass
class Gateway:
    """The app's parts, reachable as ``app.state.gateway`` (tests feed ``dispatcher.apply`` directly)."""

    settings: GatewaySettings
    dispatcher: Dispatcher
    keys: KeyFile
    feed: CatalogFeed | None = None
    client: httpx.AsyncClient | None = field(default=None)

    def http(self) -> httpx.AsyncClient:
        assert self.client is not None, "the app's lifespan is not running"
        return self.client


def _error(request: Request, err: APIError, headers: dict[str, str] | None = None) -> Response:
    return Response(
        error_bytes(err, flavor_of(request.url.path)),
        status_code=err.status,
        media_type="application/json",
        headers=headers,
    )


def create_app(
    settings: GatewaySettings,
    *,
    feed: CatalogFeed | None = None,
    activator: Activator | None = None,
    keys: KeyFile | None = None,
) -> Starlette:
    """The gateway app. ``feed``: catalog events (none: the caller applies them); ``activator``: how models
    wake (default: the metric mode's, which does nothing); ``keys``: the API keys (default: settings.keys_file)."""
    metrics = GatewayMetrics()
    dispatcher = Dispatcher(settings, metrics, activator or MetricActivator())
    gateway = Gateway(settings, dispatcher, keys or KeyFile(settings.keys_file), feed)
    catalog = dispatcher.catalog

    def access(request: Request) -> Access:
        ring = gateway.keys.current
        granted = ring.access(request.headers.get("authorization"), request.headers.get(API_KEY_HEADER))
        if granted is None:
            raise AuthenticationError(f"missing or invalid API key: {SEND_A_KEY}")
        return granted

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        if catalog.ready:
            return PlainTextResponse("ok")
        return PlainTextResponse("the catalog of models has not synced yet", status_code=503)

    async def metrics_route(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def root(request: Request) -> Response:
        return PlainTextResponse(OLLAMA_RUNNING)

    async def version(request: Request) -> Response:
        return JSONResponse({"version": _version()})

    async def v1_models(request: Request) -> Response:
        return JSONResponse(openai_models(catalog.listed(access(request).visible(catalog.models.values()))))

    async def v1_model(request: Request) -> Response:
        requested = request.path_params["model_id"]
        visible = access(request).visible(catalog.listed())
        model = catalog.resolve(requested, visible)
        if model is None:
            raise ModelNotFoundError(requested)
        return JSONResponse(model_card(model))

    async def tags(request: Request) -> Response:
        return JSONResponse(ollama_tags(catalog.listed(access(request).visible(catalog.models.values()))))

    async def ps(request: Request) -> Response:
        visible = access(request).visible(catalog.models.values())
        return JSONResponse(ollama_ps(m for m in catalog.listed(visible) if catalog.endpoints(m.id)))

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, APIError)
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthenticationError) else None
        return _error(request, exc, headers)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        err: APIError = (
            MethodNotAllowedError(f"method {request.method} is not allowed on {request.url.path}")
            if exc.status_code == 405
            else RouteNotFoundError(f"no route {request.url.path}")
        )
        return _error(request, err)

    proxy = ModelProxy(dispatcher, lambda: gateway.keys.current, gateway.http)
    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_route),
        Route("/", root, methods=["GET", "HEAD"]),
        Route("/api/version", version),
        Route("/api/tags", tags),
        Route("/api/ps", ps),
        Route("/v1/models", v1_models),
        Route("/v1/models/{model_id:path}", v1_model),
        *(Route(path, proxy, methods=["POST"]) for path in MODEL_ROUTES),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        gateway.client = _http_client(settings)
        await dispatcher.activator.start()
        if gateway.feed is not None:
            gateway.feed.start(dispatcher.apply)
        try:
            yield {}
        finally:
            if gateway.feed is not None:
                gateway.feed.stop()
            await dispatcher.activator.stop()
            await gateway.client.aclose()

    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={APIError: on_api_error, HTTPException: on_http_error},
    )
    app.state.gateway = gateway
    return app
