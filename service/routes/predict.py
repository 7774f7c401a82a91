"""``POST /predict``: an uploaded photo in, the age of every face out.

The stages run off the event loop: decoding and dlib alignment in the detection pool (one aligner per thread),
the model in the micro-batcher's thread, batched with the faces of concurrent requests.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from fastapi import APIRouter, Request
from prometheus_client import Histogram

from core.errors import NoFaceError
from core.image import decode_image
from service.options import AnswerOptionsDep
from service.runtime import AlignerDep, ReadyRuntimeDep
from service.schemas import ErrorResponse, PredictResponse
from service.upload import read_upload

router = APIRouter()

T = TypeVar("T")

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": description}
    for status, description in {
        400: "the image is unreadable or corrupt",
        413: "the upload or its pixel count is over the limit",
        415: "the content is not a JPEG, PNG, WebP, BMP or TIFF image",
        422: "no face found, no `file` field, or a bad `threshold`, `coverage` or `min_age`",
        503: "the model is still loading",
    }.items()
}

# The route parses the multipart body itself (streamed, within the byte limit), so FastAPI cannot infer it: the
# schema is declared here, for /docs and for clients generated from /openapi.json.
_UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "the photo: JPEG, PNG, WebP, BMP or TIFF, judged by content",
                        }
                    },
                }
            }
        },
    }
}


def _timed(histogram: Histogram, work: Callable[..., T], *args: Any) -> T:
    started = time.perf_counter()
    try:
        return work(*args)
    finally:
        histogram.observe(time.perf_counter() - started)


@router.post("/predict", response_model=PredictResponse, responses=_ERRORS, openapi_extra=_UPLOAD_BODY)
async def predict(
    request: Request,
    runtime: ReadyRuntimeDep,
    aligner: AlignerDep,
    options: AnswerOptionsDep,
) -> PredictResponse:
    """Estimate the age of every face (up to ``MAX_FACES``, largest first) in the multipart field ``file``."""
    settings, metrics = runtime.settings, runtime.metrics
    assert runtime.predictor is not None
    assert runtime.batcher is not None
    data = await read_upload(request, settings.max_upload_bytes)
    loop = asyncio.get_running_loop()
    decode = metrics.stage_seconds.labels(stage="decode")
    detect = metrics.stage_seconds.labels(stage="detect")
    with runtime.batcher.expecting():
        rgb = await loop.run_in_executor(runtime.detect_pool, _timed, decode, decode_image, data, settings.max_pixels)
        faces = await loop.run_in_executor(runtime.detect_pool, _timed, detect, aligner.align, rgb)
        metrics.faces_per_image.observe(len(faces))
        if not faces:
            raise NoFaceError("no face found in the image; send a photo with a clearly visible, roughly frontal face")
        faces = list(faces)[: settings.max_faces]
        logits = runtime.batcher.enqueue(np.stack([face.chip for face in faces]))
    return runtime.predictor.response([face.box for face in faces], await logits, options)
