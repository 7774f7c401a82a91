"""``GET /health`` (readiness, device, what a client needs of the model) and ``GET /metrics`` (Prometheus text).

Both also answer ``HEAD``, which uptime monitors use. ``/health`` names the model and its label range and chip size,
never the training run's paths or library versions: those stay in the model file and its model card.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Response

from service.metrics import CONTENT_TYPE
from service.runtime import ReadyRuntimeDep, RuntimeDep
from service.schemas import ErrorResponse, HealthResponse

if TYPE_CHECKING:
    from service.predictor import Predictor

router = APIRouter()


def model_summary(predictor: Predictor) -> dict[str, Any]:
    """What ``/health`` tells any client about the served model: the loaded model's id (as in every answer and
    ``GET /model``), its architecture, the label range, the chip size, and the forward pass's runtime and precision."""
    metadata = predictor.metadata
    start, classes = int(metadata["start_label"]), int(metadata["num_classes"])
    architecture = f"{metadata.get('arch_type', 'model')}-{metadata.get('arch_subtype', '')}"
    return {
        "id": predictor.model_id,
        "architecture": architecture.rstrip("-"),
        "start_label": start,
        "end_label": int(metadata.get("end_label", start + classes - 1)),
        "num_classes": classes,
        "img_size": int(metadata["img_size"]),
        **predictor.engine_summary,
    }


# HEAD is a second route on the same function, kept out of the schema so that each operation has one id.
@router.head("/health", include_in_schema=False)
@router.get("/health", responses={503: {"model": ErrorResponse, "description": "not ready yet, or failed"}})
async def health(runtime: ReadyRuntimeDep) -> HealthResponse:
    """200 once the model is loaded and warm, with the model's identity; 503 (with the reason) before."""
    assert runtime.predictor is not None
    return HealthResponse(status="ok", model=model_summary(runtime.predictor), device=runtime.predictor.device)


@router.head("/metrics", include_in_schema=False, response_class=Response)
@router.get("/metrics", response_class=Response)
async def metrics(runtime: RuntimeDep) -> Response:
    """Prometheus metrics of this process."""
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE)
