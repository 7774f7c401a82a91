"""Open Inference Protocol v2 (REST), as KServe and Triton define it, so their clients and tooling can call the
service: ``GET /v2/health/live``, ``/v2/health/ready``, ``GET /v2`` (server metadata), ``GET /v2/models/age``,
``/v2/models/age/ready`` and ``POST /v2/models/age/infer`` (also under ``/v2/models/age/versions/<n>/``).

Inference runs the same pipeline and micro-batcher as ``POST /predict`` (``service.pipeline.answer``), so the same
photo gets the same ages; the wire format is ``service.oip``. Errors carry the protocol's ``{"error": "..."}`` (what
``tritonclient`` reads) inside the service's usual problem details, with the same ``code`` and status as
``/predict``'s. Every inference answer names its model: ``parameters.model_id`` and the ``X-Model-Id`` header.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from core.errors import AgeEstimationError, ImageTooLargeError
from service.errors import PROBLEM_MEDIA_TYPE, problem_body, status_for
from service.oip import HEADER_LENGTH, MODEL_NAME, encode_response, model_metadata, output_tensors, parse_request
from service.options import AnswerOptions
from service.pipeline import answer
from service.runtime import Runtime, RuntimeDep
from service.schemas import error_responses

router = APIRouter(prefix="/v2", tags=["Open Inference Protocol v2"])

_NOT_READY = error_responses({503: "the model is still loading, or cannot answer"})
_MODEL_ERRORS = error_responses({404: "no such model or version", 503: "the model is still loading"})
_INFER_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the faces' tensors: JSON, or JSON then binary tensor data (Inference-Header-Content-Length)",
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["model_name", "outputs"]}},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    },
    **error_responses(
        {
            400: "a malformed inference request, or a corrupt image",
            404: "no such model or version",
            413: "the photo or the request is over the limit",
            415: "the photo is not an image type the service takes",
            422: "no face found",
            503: "the model is still loading",
        }
    ),
}

JSON_OVERHEAD_BYTES = 64 * 1024
"""Room for the request's JSON beside the photo (base64 makes the photo 4/3 larger)."""


def oip_error(status: int, detail: str, code: str | None = None) -> JSONResponse:
    """Problem details plus the protocol's ``error`` member; 503s get ``Retry-After``."""
    headers = {"Retry-After": "5"} if status == 503 else None
    body = {**problem_body(status, detail, code), "error": detail}
    return JSONResponse(body, status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers)


def _refusal(runtime: Runtime, model_name: str | None = None, model_version: str | None = None) -> Response | None:
    """The error answer when the model named is not this one, or not (yet) ready; ``None`` when all is well."""
    if model_name is not None and model_name != MODEL_NAME:
        return oip_error(404, f"no model {model_name!r}; this server serves '{MODEL_NAME}'", "not_found")
    if not runtime.ready or runtime.predictor is None:
        failure = runtime.batcher.failure if runtime.batcher is not None else None
        detail = runtime.error or failure or "the model is still loading; retry in a few seconds"
        return oip_error(503, detail, "not_ready")
    if model_version is not None and model_version != _version(runtime):
        detail = f"version {model_version!r} of '{MODEL_NAME}' is not served; serving {_version(runtime)!r}"
        return oip_error(404, detail, "not_found")
    return None


def _version(runtime: Runtime) -> str | None:
    identity = runtime.predictor.identity if runtime.predictor is not None else None
    return str(identity.version) if identity is not None and identity.version is not None else None


@router.get("/health/live")
async def live() -> dict[str, bool]:
    """200 while the process answers."""
    return {"live": True}


@router.get("/health/ready", response_model=None, responses=_NOT_READY)
async def ready(runtime: RuntimeDep) -> dict[str, bool] | Response:
    """200 once the model is warm and its batcher runs; 503 otherwise."""
    return _refusal(runtime) or {"ready": True}


@router.get("")
async def server_metadata(request: Request) -> dict[str, Any]:
    """The server's name, version and protocol extensions."""
    return {"name": "age-serve", "version": request.app.version, "extensions": ["binary_tensor_data"]}


async def _model_metadata(runtime: Runtime, model_name: str, model_version: str | None) -> dict[str, Any] | Response:
    refusal = _refusal(runtime, model_name, model_version)
    if refusal is not None:
        return refusal
    assert runtime.predictor is not None
    version = _version(runtime)
    metadata = {"name": MODEL_NAME, "platform": "keras_h5", **model_metadata(runtime.predictor.num_classes)}
    metadata["parameters"] = {"model_id": runtime.predictor.model_id}
    return {**metadata, "versions": [version]} if version is not None else metadata


@router.get("/models/{model_name}", response_model=None, responses=_MODEL_ERRORS)
async def model(runtime: RuntimeDep, model_name: str) -> dict[str, Any] | Response:
    """The model's inputs and outputs (``-1``: the number of faces) and its versions."""
    return await _model_metadata(runtime, model_name, None)


@router.get("/models/{model_name}/versions/{model_version}", response_model=None, responses=_MODEL_ERRORS)
async def model_version(runtime: RuntimeDep, model_name: str, model_version: str) -> dict[str, Any] | Response:
    """As ``GET /v2/models/age``, for the version served (404 for any other)."""
    return await _model_metadata(runtime, model_name, model_version)


@router.get("/models/{model_name}/ready", response_model=None, responses=_MODEL_ERRORS)
async def model_ready(runtime: RuntimeDep, model_name: str) -> dict[str, Any] | Response:
    """200 once the model can answer; 503 before."""
    return _refusal(runtime, model_name) or {"name": MODEL_NAME, "ready": True}


@router.get("/models/{model_name}/versions/{model_version}/ready", response_model=None, responses=_MODEL_ERRORS)
async def model_version_ready(runtime: RuntimeDep, model_name: str, model_version: str) -> dict[str, Any] | Response:
    """200 when this version serves and can answer."""
    return _refusal(runtime, model_name, model_version) or {"name": MODEL_NAME, "ready": True}


_INFER_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object", "required": ["inputs"]}},
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "description": f"binary tensor data extension: the JSON's length in the {HEADER_LENGTH} header",
            },
        },
    }
}


@router.post(
    "/models/{model_name}/infer", response_class=Response, responses=_INFER_RESPONSES, openapi_extra=_INFER_DOC
)
async def infer(request: Request, runtime: RuntimeDep, model_name: str) -> Response:
    """The ages of the faces in the ``image`` input, as ``result_value``, ``age_interval``, ``box`` and
    ``raw_logits`` tensors, largest face first."""
    return await _infer(request, runtime, model_name, None)


@router.post(
    "/models/{model_name}/versions/{model_version}/infer",
    response_class=Response,
    responses=_INFER_RESPONSES,
    openapi_extra=_INFER_DOC,
)
async def infer_version(request: Request, runtime: RuntimeDep, model_name: str, model_version: str) -> Response:
    """As ``POST /v2/models/age/infer``, when this version serves (404 for any other)."""
    return await _infer(request, runtime, model_name, model_version)


async def _infer(request: Request, runtime: Runtime, model_name: str, model_version: str | None) -> Response:
    refusal = _refusal(runtime, model_name, model_version)
    if refusal is not None:
        return refusal
    max_bytes = runtime.settings.max_upload_bytes
    try:
        body = await _read_body(request, max_bytes * 4 // 3 + JSON_OVERHEAD_BYTES, max_bytes)
        # Parsing a body of up to ~13 MB (base64 JSON) in a thread keeps the event loop answering probes meanwhile.
        parsed = await asyncio.to_thread(parse_request, body, request.headers.get(HEADER_LENGTH), max_bytes)
        assert runtime.aligner is not None
        result = await answer(runtime, runtime.aligner, parsed.image, AnswerOptions())
    except AgeEstimationError as exc:
        status = status_for(exc)
        if status == 500:
            raise
        return oip_error(status, str(exc), exc.code)
    content, json_size = encode_response(output_tensors(result.faces), parsed, model_version, result.model_id)
    headers = {"X-Model-Id": result.model_id}
    if json_size is None:
        return Response(content, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(json_size)
    return Response(content, media_type="application/octet-stream", headers=headers)


async def _read_body(request: Request, limit: int, max_bytes: int) -> bytes:
    """The whole body, refused (413) as soon as it is declared or received over ``limit`` bytes."""
    declared = request.headers.get("content-length", "")
    received = bytearray()
    if not (declared.isdigit() and int(declared) > limit):
        async for chunk in request.stream():
            received += chunk
            if len(received) > limit:
                break
        else:
            return bytes(received)
    raise ImageTooLargeError(f"the inference request is over the limit for a photo of {max_bytes} bytes")
