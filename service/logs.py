"""The service's log lines: one per request (``service.access``) plus uvicorn's and the app's own, as text or JSON.

``LOG_FORMAT=json`` writes one JSON object per line, for uvicorn's lines and the app's alike, with the keys ``time``
(ISO 8601, UTC), ``level``, ``logger``, ``message``, ``request_id``, ``method``, ``path``, ``status``,
``duration_ms`` and ``model_id`` (null where a line has none, e.g. start-up), plus ``trace_id`` for a request that
came with a W3C ``traceparent`` and ``exc_info`` (the traceback) for a bug. The default, ``text``, keeps uvicorn's
look and adds the request id to each line logged during a request.

The request line replaces uvicorn's access log, which knows neither the duration nor the model: it is written once
the response has been sent (or has failed), with the id of the model that answered (its ``X-Model-Id``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from asgi_correlation_id import correlation_id
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.request_ids import trace_id

ACCESS_LOGGER = "service.access"
access_logger = logging.getLogger(ACCESS_LOGGER)

REQUEST_FIELDS = ("request_id", "method", "path", "status", "duration_ms", "model_id")
"""What every JSON line holds besides ``time``, ``level``, ``logger`` and ``message``."""


class RequestContextFilter(logging.Filter):
    """Give every record the request's id (and trace id) from the request's context, and a ``request_tag`` for
    the text format: ``"[<id>] "`` during a request, empty otherwise."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = getattr(record, "request_id", None) or correlation_id.get()
        record.request_id = request_id
        record.trace_id = getattr(record, "trace_id", None) or trace_id.get()
        record.request_tag = f"[{request_id}] " if request_id else ""
        return True


class JsonLineFormatter(JsonFormatter):
    """One JSON object per record: ``time`` first, then the fixed keys, then whatever the record adds."""

    def __init__(self) -> None:
        super().__init__(
            ["levelname", "name", "message", *REQUEST_FIELDS],
            rename_fields={"levelname": "level", "name": "logger"},
            timestamp="time",
            # uvicorn's start-up lines carry a coloured copy of their message; the text format's tag is not data.
            reserved_attrs=[*RESERVED_ATTRS, "color_message", "request_tag"],
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        if log_data.get("trace_id") is None:
            log_data.pop("trace_id", None)
        return {"time": log_data.pop("time"), **log_data}


def logging_config(log_format: str, level: str) -> dict[str, Any]:
    """The ``logging.config.dictConfig`` for uvicorn's ``log_config``: uvicorn's loggers and the service's (``core``,
    ``service``, asgi-correlation-id's) through the same handlers, in ``log_format`` (``text`` or ``json``)."""
    if log_format == "json":
        formatter: dict[str, Any] = {"()": JsonLineFormatter}
    else:
        formatter = {"()": "uvicorn.logging.DefaultFormatter", "fmt": "%(levelprefix)s %(request_tag)s%(message)s"}
    level = level.upper()

    def handler(stream: str) -> dict[str, Any]:
        return {"class": "logging.StreamHandler", "formatter": "line", "filters": ["request"], "stream": stream}

    # "__main__": service.main's own logger when it runs as `python -m service.main`.
    loggers = {
        name: {"handlers": ["stderr"], "level": level, "propagate": False}
        for name in ("uvicorn", "core", "service", "asgi_correlation_id", "__main__")
    }
    # Request lines go to stdout, as uvicorn's access log did; uvicorn's own is off (it lacks duration and model).
    loggers[ACCESS_LOGGER] = {"handlers": ["stdout"], "level": level, "propagate": False}
    loggers["uvicorn.access"] = {"handlers": [], "level": "WARNING", "propagate": False}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request": {"()": RequestContextFilter}},
        "formatters": {"line": formatter},
        "handlers": {"stderr": handler("ext://sys.stderr"), "stdout": handler("ext://sys.stdout")},
        "loggers": loggers,
    }


class AccessLogMiddleware:
    """Log one ``service.access`` line per HTTP request once it is answered: method, path, status, duration and the
    model that answered. Runs inside the request-id middleware, so the line carries the request's id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # An exception escaping the app is answered 500 by Starlette, outside every middleware.
        status, model_id = 500, None

        async def watch(message: Message) -> None:
            nonlocal status, model_id
            if message["type"] == "http.response.start":
                status = int(message["status"])
                model_id = Headers(raw=message["headers"]).get("x-model-id")
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            duration_ms = round((time.perf_counter() - started) * 1000, 1)
            client = scope.get("client")
            where = f"{client[0]}:{client[1]}" if client else "-"
            access_logger.info(
                '%s - "%s %s HTTP/%s" %d %.1f ms%s',
                where,
                scope["method"],
                scope["path"],
                scope.get("http_version", "1.1"),
                status,
                duration_ms,
                f" {model_id}" if model_id else "",
                extra={
                    "method": scope["method"],
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": duration_ms,
                    "model_id": model_id,
                },
            )
