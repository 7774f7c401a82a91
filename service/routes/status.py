"""``GET /health`` (readiness, model metadata, device) and ``GET /metrics`` (Prometheus text)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.metrics import CONTENT_TYPE
from service.runtime import ReadyRuntimeDep, RuntimeDep
from service.schemas import ErrorResponse, HealthResponse

router = APIRouter()


@router.get("/health", responses={503: {"model": ErrorResponse, "description": "not ready yet, or failed"}})
async def health(runtime: ReadyRuntimeDep) -> HealthResponse:
    """200 once the model is loaded and warm, with its metadata; 503 (with the reason) before."""
    assert runtime.predictor is not None
    return HealthResponse(status="ok", model=runtime.predictor.metadata, device=runtime.predictor.device)


@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
