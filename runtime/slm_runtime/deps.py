"""Request-scoped access to the lifespan state (no module globals)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import Request

from slm_runtime.service import ModelService

__all__ = ["Service", "get_service"]


def get_service(request: Request) -> ModelService:
    """The model service the app's lifespan created (uvicorn copies lifespan state into every request)."""
    service = request.state.service
    assert isinstance(service, ModelService)
    return service


Service = Annotated[ModelService, Depends(get_service)]
"""A route parameter that receives the model service."""
