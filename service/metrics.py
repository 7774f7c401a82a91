"""Prometheus metrics of one app instance, in a registry of its own so that tests can build several apps.

Exposed at ``GET /metrics``: requests by route and status, request latency, latency per stage (``decode``,
``detect``, ``model``), model batch sizes and faces per image. Every label value comes from a closed set (the route
table's templates, the HTTP methods, status codes), never from the raw request: a client sending odd methods or
paths cannot grow the exposition.
"""

from __future__ import annotations

import time

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE"})
"""RFC 9110's methods; any other is counted as ``other``."""

_SECONDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

CONTENT_TYPE = CONTENT_TYPE_LATEST
"""The ``Content-Type`` of ``render()``'s output."""


class ServiceMetrics:
    """The service's collectors; the routes and the batcher record into them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "age_http_requests",
            "HTTP requests answered, by route template, method and status code.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "age_http_request_seconds",
            "Time from request start to response start, by route template.",
            ["route"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "age_stage_seconds",
            "Time per pipeline stage: decode (bytes to pixels), detect (dlib detection and alignment, per image), "
            "model (one batched model call).",
            ["stage"],
            buckets=_SECONDS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "age_model_batch_size",
            "Face chips per model call (micro-batches mix faces of concurrent requests).",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=self.registry,
        )
        self.faces_per_image = Histogram(
            "age_faces_per_image",
            "Faces analysed per decoded image (at most MAX_FACES, cut before landmarks).",
            buckets=(0, 1, 2, 3, 4, 6, 8, 12, 16, 32, 64),
            registry=self.registry,
        )

    def observe_batch(self, size: int, seconds: float) -> None:
        """Record one model call of ``size`` chips that took ``seconds``."""
        self.batch_size.observe(size)
        self.stage_seconds.labels(stage="model").observe(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition of every collector."""
        return generate_latest(self.registry)


class RequestMetricsMiddleware:
    """ASGI middleware counting every HTTP response by route template (not raw path, to bound label values)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                self.metrics.request_seconds.labels(route=_route(scope)).observe(time.perf_counter() - started)
            await send(message)

        responded = False

        async def send_and_record_once(message: Message) -> None:
            nonlocal responded
            responded = responded or message["type"] == "http.response.start"
            await send_and_record(message)

        try:
            await self.app(scope, receive, send_and_record_once)
        except BaseException:
            # An unhandled error is answered 500 by Starlette's outermost middleware, outside this one: record
            # its latency here, or the histogram would never hold a 500.
            if not responded:
                self.metrics.request_seconds.labels(route=_route(scope)).observe(time.perf_counter() - started)
            raise
        finally:
            self.metrics.requests.labels(route=_route(scope), method=_method(scope), status=str(status)).inc()


def _route(scope: Scope) -> str:
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def _method(scope: Scope) -> str:
    method = str(scope["method"])
    return method if method in _METHODS else "other"
