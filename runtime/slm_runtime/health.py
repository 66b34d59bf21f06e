"""Health and metrics routes: /healthz (alive), /readyz (model loaded and warmed up), /metrics."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from slm_runtime.deps import Service
from slm_runtime.metrics import CONTENT_TYPE

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is alive (500 once the model failed to load)")
async def healthz(service: Service) -> JSONResponse:
    if service.load_error is not None:
        return JSONResponse({"status": "failed", "error": type(service.load_error).__name__}, status_code=500)
    return JSONResponse({"status": "ok"})


@router.get("/readyz", summary="The model is loaded and produced a warm-up token (503 until then)")
async def readyz(service: Service) -> JSONResponse:
    if service.ready:
        return JSONResponse({"status": "ready", "model": service.name})
    status = "failed" if service.load_error is not None else "stopping" if service.shutdown.draining else "loading"
    return JSONResponse({"status": status, "model": service.name}, status_code=503)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(service: Service) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)
