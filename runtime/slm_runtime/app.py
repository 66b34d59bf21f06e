"""The ASGI application: ``create_app(settings)`` wires routers, middleware and error handlers.

The model service (engine, scheduler, metrics) lives in the lifespan state, never in module globals; the model
loads in the background so that /healthz and /readyz answer while it does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from slm_runtime import __version__
from slm_runtime.accesslog import AccessLogMiddleware
from slm_runtime.admission import AdmissionGate, generation_paths
from slm_runtime.auth import ApiKeyMiddleware, flavor_of
from slm_runtime.engines import load_engine
from slm_runtime.errors import (
    RETRY_AFTER_SECONDS,
    APIError,
    InvalidRequestError,
    MethodNotAllowedError,
    RouteNotFoundError,
    as_api_error,
    error_body,
)
from slm_runtime.health import router as health_router
from slm_runtime.limits import BodyLimitMiddleware
from slm_runtime.metrics import Metrics
from slm_runtime.ollama.router import GENERATION_ENDPOINTS as OLLAMA_GENERATION
from slm_runtime.ollama.router import router as ollama_router
from slm_runtime.openai.router import GENERATION_ENDPOINTS as OPENAI_GENERATION
from slm_runtime.openai.router import router as openai_router
from slm_runtime.service import EngineLoader, ModelService
from slm_runtime.settings import RuntimeSettings
from slm_runtime.shutdown import Shutdown

__all__ = ["create_app", "validation_message"]

log = logging.getLogger(__name__)


def _error_response(request: Request, err: APIError) -> JSONResponse:
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if err.status == 503 else None
    return JSONResponse(error_body(err, flavor_of(request.url.path)), status_code=err.status, headers=headers)


def validation_message(exc: RequestValidationError) -> InvalidRequestError:
    """A 400 naming the first offending field (``messages[0].role``) and what is wrong with it."""
    errors = list(exc.errors())
    if not errors:
        return InvalidRequestError("invalid request body")
    first = errors[0]
    loc = [part for part in first.get("loc", ()) if part != "body"]
    if first.get("type") == "json_invalid":
        detail = (first.get("ctx") or {}).get("error", "malformed JSON")
        return InvalidRequestError(f"invalid JSON in the request body: {detail}")
    field = ""
    for part in loc:
        field += f"[{part}]" if isinstance(part, int) else (f".{part}" if field else str(part))
    message = str(first.get("msg", "invalid value"))
    if field:
        return InvalidRequestError(f"invalid request: field '{field}': {message}", param=field)
    return InvalidRequestError(f"invalid request body: {message}")


_ROUTING_ERRORS: dict[int, type[APIError]] = {404: RouteNotFoundError, 405: MethodNotAllowedError}


def _routing_error(exc: StarletteHTTPException) -> APIError:
    """The API error for the HTTPExceptions of Starlette and FastAPI: 404 (no route), 405 (wrong method) and 400
    (a body that cannot be read), the only ones our routes can raise."""
    return _ROUTING_ERRORS.get(exc.status_code, InvalidRequestError)(str(exc.detail))


def _install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(request: Request, exc: Exception) -> JSONResponse:
        return _error_response(request, as_api_error(exc))

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        return _error_response(request, validation_message(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return _error_response(request, _routing_error(exc))

    app.add_exception_handler(APIError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_api_error)


def create_app(
    settings: RuntimeSettings, *, engine_loader: EngineLoader | None = None, shutdown: Shutdown | None = None
) -> FastAPI:
    """The runtime's ASGI app. ``engine_loader`` replaces :func:`load_engine` (tests wrap the real one);
    ``shutdown`` is shared with the server loop that `serve` runs (drain on SIGTERM, exit on a failed load)."""
    loader = engine_loader or load_engine
    stop = shutdown or Shutdown()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        metrics = Metrics(settings.served_name)
        service = ModelService(settings, metrics, loader, stop)
        loading = asyncio.create_task(service.load(), name="slm-model-load")
        loading.add_done_callback(lambda task: task.cancelled() or task.exception())
        try:
            yield {"service": service}
        finally:
            loading.cancel()
            with contextlib.suppress(BaseException):
                await loading
            await service.drain(timeout=10.0)
            if not service.scheduler.running:  # a generation thread still using the engine must not see it freed
                await asyncio.to_thread(service.close)

    app = FastAPI(
        title="slm-runtime",
        version=__version__,
        summary="Serves one small language model over the Ollama and OpenAI APIs.",
        lifespan=lifespan,
    )
    app.include_router(health_router)
    app.include_router(ollama_router)
    app.include_router(openai_router)
    _install_error_handlers(app)
    # Starlette runs the last-added middleware outermost: access log, then body limits, then auth, then admission
    # (a 503 for a full server comes before the body is read, after the key is checked).
    routes = [*ollama_router.routes, *openai_router.routes]
    app.add_middleware(AdmissionGate, paths=generation_paths(routes, {*OLLAMA_GENERATION, *OPENAI_GENERATION}))
    if settings.server.api_key is not None:
        app.add_middleware(ApiKeyMiddleware, api_key=settings.server.api_key.get_secret_value())
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.server.max_body_bytes)
    app.add_middleware(AccessLogMiddleware, log_prompts=settings.server.log_prompts)
    return app
