"""The one place where errors become HTTP responses: RFC 9457 problem details with a stable ``code``.

Every error answer is ``application/problem+json``::

    {"type": "urn:age-estimation:problem:no_face", "title": "No face found", "status": 422,
     "detail": "no face found in the image; ...", "code": "no_face", "request_id": "4bf92f35..."}

``code`` is the stable, snake_case name a client branches on (:data:`PROBLEMS` lists them all with their status);
``detail`` is one human-readable line; ``request_id`` is the request's ``X-Request-ID``, which is also in the logs.
Each error class carries its ``code`` as a class attribute, so the status of an error is looked up here, once.
Bad input is the client's fault and gets a 4xx naming what was wrong; only a bug in the service gives a 500, and that
one is logged with its traceback.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import NamedTuple

from asgi_correlation_id import correlation_id
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from core.errors import AgeEstimationError, ImageTooLargeError

logger = logging.getLogger(__name__)

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_TYPE_PREFIX = "urn:age-estimation:problem:"
"""``type`` is this prefix plus the code: a stable identifier (RFC 9457 allows a URN), not a page to fetch."""
RETRY_AFTER_S = 5
"""``Retry-After`` of every 503: the model loads, or a capacity budget frees, within seconds."""


class Problem(NamedTuple):
    """A code's HTTP status and its short, fixed title."""

    status: int
    title: str


PROBLEMS: dict[str, Problem] = {
    "bad_request": Problem(400, "Malformed request"),
    "corrupt_image": Problem(400, "Corrupt image"),
    "unsupported_image": Problem(415, "Unsupported image type"),
    "image_too_large": Problem(413, "Image too large"),
    "image_too_complex": Problem(422, "Image too costly to decode"),
    "body_too_large": Problem(413, "Request body too large"),
    "too_many_items": Problem(413, "Too many items in the batch"),
    "json_too_deep": Problem(400, "JSON over the nesting or number limits"),
    "headers_too_large": Problem(431, "Request headers too large"),
    "no_face": Problem(422, "No face found"),
    "no_file": Problem(422, "No image in the request"),
    "invalid_parameter": Problem(422, "Invalid parameter"),
    "unauthorized": Problem(401, "Missing or wrong API key"),
    "not_found": Problem(404, "Not found"),
    "method_not_allowed": Problem(405, "Method not allowed"),
    "request_timeout": Problem(408, "Request body too slow"),
    "not_ready": Problem(503, "Not ready"),
    "overloaded": Problem(503, "Overloaded"),
    "shutting_down": Problem(503, "Shutting down"),
    "internal_error": Problem(500, "Internal error"),
}
"""Every ``code`` the service answers with, its status and title (docs/serving.md lists them for users)."""

CODE_BY_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "body_too_large",
    415: "unsupported_image",
    422: "invalid_parameter",
    431: "headers_too_large",
    503: "not_ready",
}
"""The code of an error raised by status alone (Starlette's 404/405, an ``HTTPException``); otherwise 500's."""


class FormError(AgeEstimationError):
    """The request has no image: not a multipart form with a ``file`` field, nor JSON with one (HTTP 422)."""

    code = "no_file"


class BadRequestError(AgeEstimationError):
    """The request itself is malformed: bad base64, bad JSON, a broken multipart body (HTTP 400)."""

    code = "bad_request"


class BodyTimeoutError(AgeEstimationError):
    """The request body did not arrive within ``BODY_TIMEOUT_S`` (HTTP 408; the connection is closed)."""

    code = "request_timeout"


class BatcherUnavailableError(AgeEstimationError):
    """The model batcher is stopping or has died: the service cannot predict now (HTTP 503)."""

    code = "not_ready"


class JsonLimitError(AgeEstimationError):
    """A JSON body nests deeper or carries longer numbers than the service reads (HTTP 400)."""

    code = "json_too_deep"


class BodyTooLargeError(ImageTooLargeError):
    """The request body is over its limit, declared or streamed (HTTP 413)."""

    code = "body_too_large"


class TooManyItemsError(ImageTooLargeError):
    """More photos (or JSON values) in one request than ``MAX_BATCH_FILES`` allows (HTTP 413)."""

    code = "too_many_items"


class OverloadedError(AgeEstimationError):
    """The in-flight upload bytes or decoded pixels are at their budget (HTTP 503 with ``Retry-After``)."""

    code = "overloaded"


def status_for(exc: AgeEstimationError) -> int:
    """The HTTP status of a ``core`` or service error; 500 for the ones a request should never cause."""
    return problem_of(exc.code).status


def problem_of(code: str) -> Problem:
    """The status and title of ``code``; an unknown code is a bug, answered as ``internal_error``."""
    return PROBLEMS.get(code, PROBLEMS["internal_error"])


def problem_body(status: int, detail: str, code: str | None = None) -> dict[str, object]:
    """The problem-details object for an error of ``status`` (its ``code`` by default from the status)."""
    code = code or CODE_BY_STATUS.get(status, "internal_error")
    return {
        "type": PROBLEM_TYPE_PREFIX + code,
        "title": problem_of(code).title,
        "status": status,
        "detail": detail,
        "code": code,
        "request_id": correlation_id.get(),
    }


def problem_bytes(
    status: int, detail: str, code: str | None = None, extra: Mapping[str, object] | None = None
) -> bytes:
    """:func:`problem_body` (plus ``extra`` members) encoded for ASGI middleware that answers before the app (as
    :data:`PROBLEM_MEDIA_TYPE`)."""
    return json.dumps({**problem_body(status, detail, code), **(extra or {})}).encode()


def problem_response(
    status: int, detail: str, code: str | None = None, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    """An ``application/problem+json`` response; every 503 gets ``Retry-After``."""
    extra = dict(headers or {})
    if status == 503:
        extra.setdefault("Retry-After", str(RETRY_AFTER_S))
    return JSONResponse(
        problem_body(status, detail, code), status_code=status, headers=extra, media_type=PROBLEM_MEDIA_TYPE
    )


async def _age_estimation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgeEstimationError)
    status = status_for(exc)
    if status == 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    # A 408 leaves the rest of the body unread, so the connection cannot carry another request.
    headers = {"Connection": "close"} if status == 408 else dict(getattr(exc, "headers", None) or {})
    return problem_response(status, str(exc), exc.code, headers)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    detail = str(exc.detail)
    if exc.status_code == 404 and detail == "Not Found":
        detail = f"no route {request.method} {request.url.path}; see /docs for the API"
    elif exc.status_code == 405 and detail == "Method Not Allowed":
        detail = f"{request.url.path} does not take {request.method}"
    return problem_response(exc.status_code, detail, headers=exc.headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where = [str(part) for part in first.get("loc", ())]
    place = f"{where[0]} parameter '{'.'.join(where[1:])}'" if len(where) > 1 else "request"
    return problem_response(422, f"{place}: {first.get('msg', 'invalid')}", "invalid_parameter")


CLIENT_CLOSED_REQUEST = 499
"""Recorded (in metrics) for a client that went away before its upload was read; nginx uses the same code."""


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client closed the connection mid-upload: its fault, nobody is left to answer, and no traceback is due.
    logger.info("%s %s: the client disconnected before the upload was complete", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed with an unexpected error", request.method, request.url.path, exc_info=exc)
    # Starlette answers this one outside every middleware, the request-id one included: the header is added here.
    request_id = correlation_id.get()
    headers = {"X-Request-ID": request_id} if request_id else None
    return problem_response(500, "internal error; the service logged the details", "internal_error", headers)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(AgeEstimationError, _age_estimation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected_error)
