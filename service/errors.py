"""The one place where errors become HTTP responses, all with the body ``{"detail": "<one line>"}``.

Bad input is the client's fault and gets a 4xx naming what was wrong; only a bug in the service gives a 500, and
that one is logged with its traceback.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.requests import ClientDisconnect

from core.errors import (
    AgeEstimationError,
    ImageTooLargeError,
    NoFaceError,
    UnreadableImageError,
    UnsupportedImageError,
)

logger = logging.getLogger(__name__)


class FormError(AgeEstimationError):
    """The request is not a multipart form with a ``file`` field (HTTP 422)."""


class BodyTimeoutError(AgeEstimationError):
    """The request body did not arrive within ``BODY_TIMEOUT_S`` (HTTP 408; the connection is closed)."""


class BatcherUnavailableError(AgeEstimationError):
    """The model batcher is stopping or has died: the service cannot predict now (HTTP 503)."""


STATUS_BY_ERROR: dict[type[AgeEstimationError], int] = {
    UnreadableImageError: 400,
    ImageTooLargeError: 413,
    UnsupportedImageError: 415,
    NoFaceError: 422,
    FormError: 422,
    BatcherUnavailableError: 503,
    BodyTimeoutError: 408,
}


def status_for(exc: AgeEstimationError) -> int:
    """The HTTP status of a ``core`` or service error; 500 for the ones a request should never cause."""
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 500


async def _age_estimation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AgeEstimationError)
    status = status_for(exc)
    if status == 500:
        logger.error("%s %s failed: %s", request.method, request.url.path, exc)
    # A 408 leaves the rest of the body unread, so the connection cannot carry another request.
    headers = {"Retry-After": "5"} if status == 503 else {"Connection": "close"} if status == 408 else None
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0]
    where = [str(part) for part in first.get("loc", ())]
    place = f"{where[0]} parameter '{'.'.join(where[1:])}'" if len(where) > 1 else "request"
    return JSONResponse({"detail": f"{place}: {first.get('msg', 'invalid')}"}, status_code=422)


CLIENT_CLOSED_REQUEST = 499
"""Recorded (in metrics) for a client that went away before its upload was read; nginx uses the same code."""


async def _client_disconnect(request: Request, exc: Exception) -> Response:
    # The client closed the connection mid-upload: its fault, nobody is left to answer, and no traceback is due.
    logger.info("%s %s: the client disconnected before the upload was complete", request.method, request.url.path)
    return Response(status_code=CLIENT_CLOSED_REQUEST)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("%s %s failed with an unexpected error", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error; the service logged the details"}, status_code=500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on ``app``."""
    app.add_exception_handler(AgeEstimationError, _age_estimation_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(ClientDisconnect, _client_disconnect)
    app.add_exception_handler(Exception, _unexpected_error)
