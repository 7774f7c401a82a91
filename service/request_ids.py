"""Request IDs: every response carries ``X-Request-ID``, the one the client (or its gateway) sent, or a new one.

The id is in every log line of the request (``service.logs``) and in every error body (``request_id``), so a user's
complaint, a gateway's log and this service's log meet on one string. asgi-correlation-id keeps it in a context
variable for the request. A W3C ``traceparent`` (``00-<trace-id>-<parent-id>-<flags>``) is accepted: without an
``X-Request-ID``, its trace id becomes the request id, so the service's lines join the caller's trace; the trace id
is logged as ``trace_id`` either way.

An incoming id is echoed only if it is 1 to 128 characters of letters, digits and ``-._:/+=@``: anything else (a
newline forged into a log line, a kilobyte of junk) is replaced by a new id, and the replacement is logged.
"""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

from asgi_correlation_id import CorrelationIdMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Receive, Scope, Send

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_ID = re.compile(r"[A-Za-z0-9\-._:/+=@]{1,128}")
# W3C Trace Context level 1, version 00; an all-zero trace id or parent id is invalid.
_TRACEPARENT = re.compile(r"00-(?!0{32})([0-9a-f]{32})-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}")

trace_id: ContextVar[str | None] = ContextVar("trace_id", default=None)
"""The W3C trace id of the request being served, when it came with a valid ``traceparent``."""


def valid_request_id(value: str) -> bool:
    """Whether an incoming ``X-Request-ID`` is safe to echo and log."""
    return _VALID_ID.fullmatch(value) is not None


def new_request_id() -> str:
    """32 hex digits, like a W3C trace id or nginx's ``$request_id``."""
    return uuid.uuid4().hex


def trace_of(traceparent: str) -> str | None:
    """The trace id of a ``traceparent`` header, or ``None`` when it is not a valid version-00 one."""
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    return match.group(1) if match else None


class RequestIdMiddleware:
    """Take the trace id of ``traceparent`` and hand over to asgi-correlation-id, with ours as the request id when
    the client sent none."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.ids = CorrelationIdMiddleware(
            app, header_name=REQUEST_ID_HEADER, generator=new_request_id, validator=valid_request_id
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        trace = trace_of(headers.get("traceparent", ""))
        trace_id.set(trace)
        if trace is not None and not valid_request_id(headers.get(REQUEST_ID_HEADER.lower(), "")):
            scope = {**scope, "headers": list(scope["headers"])}
            MutableHeaders(scope=scope)[REQUEST_ID_HEADER] = trace
        await self.ids(scope, receive, send)
