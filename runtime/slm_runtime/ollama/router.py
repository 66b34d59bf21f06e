"""Ollama routes: thin wrappers around :mod:`slm_runtime.ollama.serving`; each model request holds the model while
it runs, and its ``keep_alive`` says how long the model stays after."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from slm_runtime.deps import Service
from slm_runtime.ollama import serving
from slm_runtime.ollama.protocol import (
    ChatRequest,
    EmbeddingsRequest,
    EmbedRequest,
    GenerateRequest,
    PullRequest,
    ShowRequest,
)
from slm_runtime.ollama.wire import keep_alive_seconds
from slm_runtime.streaming import held

__all__ = ["GENERATION_ENDPOINTS", "router"]

router = APIRouter(tags=["ollama"])


@router.get("/", response_class=PlainTextResponse, summary="Liveness in Ollama's words")
async def root() -> str:
    return "Ollama is running"


@router.head("/", include_in_schema=False)
async def root_head() -> Response:
    return Response()


@router.get("/api/version", summary="Server version")
async def version() -> dict[str, str]:
    return serving.version()


@router.get("/api/tags", summary="Models available")
async def tags(service: Service) -> dict[str, Any]:
    return serving.tags(service)


@router.post("/api/show", summary="Model details")
async def show(body: ShowRequest, service: Service) -> dict[str, Any]:
    return serving.show(service, body)


@router.get("/api/ps", summary="Models loaded")
async def ps(service: Service) -> dict[str, Any]:
    return serving.ps(service)


@router.post("/api/generate", summary="Generate a completion")
async def generate(body: GenerateRequest, request: Request, service: Service) -> Response:
    keep_alive = keep_alive_seconds(body.keep_alive)
    return await held(service.residency, keep_alive, serving.generate(service, body, request))


@router.post("/api/chat", summary="Generate the next chat message")
async def chat(body: ChatRequest, request: Request, service: Service) -> Response:
    keep_alive = keep_alive_seconds(body.keep_alive)
    return await held(service.residency, keep_alive, serving.chat(service, body, request))


@router.post("/api/embed", summary="Embeddings of one or more texts (normalized)")
async def embed(body: EmbedRequest, request: Request, service: Service) -> Response:
    keep_alive = keep_alive_seconds(body.keep_alive)
    return await held(service.residency, keep_alive, serving.embed(service, body, request))


@router.post("/api/embeddings", summary="Embedding of one text (legacy endpoint)")
async def embeddings(body: EmbeddingsRequest, request: Request, service: Service) -> Response:
    keep_alive = keep_alive_seconds(body.keep_alive)
    return await held(service.residency, keep_alive, serving.embeddings(service, body, request))


@router.post("/api/pull", summary="Pull a model (the served model is always present)")
async def pull(body: PullRequest, service: Service) -> Response:
    return serving.pull(service, body)


@router.post("/api/create", summary="Not supported (403)", include_in_schema=False)
@router.post("/api/copy", summary="Not supported (403)", include_in_schema=False)
@router.post("/api/push", summary="Not supported (403)", include_in_schema=False)
@router.delete("/api/delete", summary="Not supported (403)", include_in_schema=False)
async def manage(request: Request) -> Response:
    raise serving.unsupported(request.url.path.removeprefix("/api/"))


GENERATION_ENDPOINTS = (generate, chat)
"""The routes whose requests take a generation slot (the admission gate guards them)."""
