"""``POST /predict/batch``: several photos in one request, each answered on its own.

Photos come as several multipart ``file`` parts or as JSON ``{"images": ["<base64>", ...]}``, at most
``MAX_BATCH_FILES``. Each runs through the same pipeline as ``POST /predict`` (its faces join the same
micro-batcher, so the model sees them together), and the answer lists, in order, either that photo's ``/predict``
body (in the ``view`` asked for, with its ``model_id``) or its own ``{"detail", "status", "code"}``: one bad photo
does not fail the others. ``X-Model-Id`` names the model that answered (two, comma-separated, if a new version was
swapped in while the batch ran).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from core.errors import AgeEstimationError
from service.answers import MODEL_ID_HEADER
from service.errors import status_for
from service.options import AnswerOptionsDep
from service.pipeline import AlignedQuery, answer
from service.runtime import AlignerDep, ReadyRuntimeDep
from service.schemas import Answer, BasicResponse, PredictResponse, error_responses
from service.upload import read_images

router = APIRouter()


class ItemError(BaseModel):
    """One photo of a batch that got no prediction: the ``detail``, ``status`` and ``code`` ``/predict`` would give."""

    detail: str
    status: int
    code: str


class BatchResponse(BaseModel):
    """``POST /predict/batch``: one entry per photo, in the order sent."""

    results: list[PredictResponse | BasicResponse | ItemError]


_ERRORS = error_responses(
    {
        413: "more than MAX_BATCH_FILES photos, or the body is over the limit",
        422: "no `file` part or `images` list, or a bad query parameter",
        503: "the model is still loading",
    }
)

_BATCH_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "array", "minItems": 1, "items": {"type": "string", "format": "binary"}}
                    },
                }
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["images"],
                    "properties": {"images": {"type": "array", "minItems": 1, "items": {"type": "string"}}},
                }
            },
        },
    }
}


@router.post("/predict/batch", response_model=BatchResponse, responses=_ERRORS, openapi_extra=_BATCH_BODY)
async def predict_batch(
    request: Request,
    runtime: ReadyRuntimeDep,
    aligner: AlignerDep,
    options: AnswerOptionsDep,
    aligned: AlignedQuery = False,
) -> Response:
    """Estimate the ages in every photo sent; item errors (bad image, no face) are reported in place."""
    settings = runtime.settings
    items = await read_images(request, settings.max_upload_bytes, settings.max_batch_files)

    async def one(item: bytes | AgeEstimationError) -> Answer | ItemError:
        try:
            if isinstance(item, AgeEstimationError):
                raise item
            return await answer(runtime, aligner, item, options, aligned)
        except AgeEstimationError as exc:
            status = status_for(exc)
            if status == 500:
                raise
            return ItemError(detail=str(exc), status=status, code=exc.code)

    results = list(await asyncio.gather(*(one(item) for item in items)))
    models = dict.fromkeys(item.model_id for item in results if not isinstance(item, ItemError))
    if not models and runtime.predictor is not None:
        models[runtime.predictor.model_id] = None
    headers = {MODEL_ID_HEADER: ", ".join(models)}
    # Serialised once by pydantic-core, as /predict does.
    body = BatchResponse(results=results).model_dump_json()
    return Response(body, media_type="application/json", headers=headers)
