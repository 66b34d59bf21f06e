"""Request-scoped access to the lifespan state (no module globals)."""

from __future__ import annotations

from starlette.requests import Request

from slm_runtime.service import ModelService

__all__ = ["get_service"]


def get_service(request: Request) -> ModelService:
    """The model service the app's lifespan created (uvicorn copies lifespan state into every request)."""
    service = request.state.service
    assert isinstance(service, ModelService)
    return service
