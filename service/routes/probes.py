"""Kubernetes-style probes: ``GET /health/live`` (the process answers) and ``GET /health/ready`` (it can serve).

Liveness never looks at the model, so a slow start is not mistaken for a hung process; readiness is 503 until the
model is warm and again as soon as the service can no longer predict (its micro-batcher stopped, start-up failed),
so a load balancer sends no traffic to it. ``GET /health`` stays as it was.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.errors import problem_response
from service.runtime import RuntimeDep
from service.schemas import ErrorResponse

router = APIRouter()


@router.get("/health/live")
async def live() -> dict[str, str]:
    """200 while the process can answer requests at all."""
    return {"status": "alive"}


@router.get("/health/ready", responses={503: {"model": ErrorResponse, "description": "not ready, or cannot serve"}})
async def ready(runtime: RuntimeDep) -> JSONResponse:
    """200 once the model is loaded and warm and its batcher runs; 503 with the reason otherwise."""
    if runtime.ready:
        return JSONResponse({"status": "ready"})
    failure = runtime.batcher.failure if runtime.batcher is not None else None
    detail = runtime.error or failure or "the model is still loading; retry in a few seconds"
    return problem_response(503, detail, "not_ready")
