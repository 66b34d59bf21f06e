"""OpenAI routes: thin wrappers around :mod:`slm_runtime.openai.serving`; each model request holds the model while
it runs (OpenAI requests never unload it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from slm_runtime.deps import Service
from slm_runtime.errors import ModelNotFoundError
from slm_runtime.openai import serving
from slm_runtime.openai.protocol import ChatCompletionRequest, CompletionRequest, EmbeddingRequest
from slm_runtime.streaming import held

__all__ = ["GENERATION_ENDPOINTS", "router"]

router = APIRouter(prefix="/v1", tags=["openai"])


@router.get("/models", summary="Models available")
async def list_models(service: Service) -> dict[str, Any]:
    return serving.list_models(service)


@router.get("/models/{model_id:path}", summary="One model")
async def get_model(model_id: str, service: Service) -> dict[str, Any]:
    if not service.serves(model_id):
        raise ModelNotFoundError(model_id)
    return serving.model_card(service)


@router.post("/chat/completions", summary="Chat completion")
async def chat_completions(body: ChatCompletionRequest, request: Request, service: Service) -> Response:
    return await held(service.residency, None, serving.chat_completions(service, body, request))


@router.post("/completions", summary="Text completion")
async def completions(body: CompletionRequest, request: Request, service: Service) -> Response:
    return await held(service.residency, None, serving.completions(service, body, request))


@router.post("/embeddings", summary="Embeddings")
async def embeddings(body: EmbeddingRequest, request: Request, service: Service) -> Response:
    return await held(service.residency, None, serving.embeddings(service, body, request))


GENERATION_ENDPOINTS = (chat_completions, completions)
"""The routes whose requests take a generation slot (the admission gate guards them)."""
