"""``POST /predict``: an uploaded photo in, the age of every face out.

The stages run off the event loop: decoding and dlib alignment in the detection pool (one aligner per thread),
the model in the micro-batcher's thread, batched with the faces of concurrent requests.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response

from service.answers import MODEL_ID_HEADER
from service.options import AnswerOptionsDep
from service.pipeline import AlignedQuery, answer
from service.runtime import AlignerDep, ReadyRuntimeDep
from service.schemas import Answer, error_responses
from service.upload import read_image

router = APIRouter()

_ERRORS = error_responses(
    {
        400: "the image is unreadable or corrupt",
        413: "the upload or its pixel count is over the limit",
        415: "the content is not a JPEG, PNG, WebP, BMP or TIFF image",
        422: "no face found, no `file` field, or a bad `threshold`, `coverage`, `min_age` or `view`",
        503: "the model is still loading",
    }
)

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
            },
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["image"],
                    "properties": {"image": {"type": "string", "description": "the photo's bytes in base64"}},
                }
            },
        },
    }
}


@router.post("/predict", response_model=Answer, responses=_ERRORS, openapi_extra=_UPLOAD_BODY)
async def predict(
    request: Request,
    runtime: ReadyRuntimeDep,
    aligner: AlignerDep,
    options: AnswerOptionsDep,
    aligned: AlignedQuery = False,
) -> Response:
    """Estimate the age of every face (up to ``MAX_FACES``, largest first) in the multipart field ``file``, or in
    the JSON ``{"image": "<base64>"}``; with ``aligned=true`` the upload is one face chip. ``view=basic`` answers
    only each face's age, interval and box. The ``X-Model-Id`` header names the model that answered."""
    data = await read_image(request, runtime.settings.max_upload_bytes)
    body = await answer(runtime, aligner, data, options, aligned)
    # Serialised once by pydantic-core: returned as a model, FastAPI would validate and encode it a second time.
    return Response(body.model_dump_json(), media_type="application/json", headers={MODEL_ID_HEADER: body.model_id})
