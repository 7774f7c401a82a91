"""The app's middleware, in one place because their order matters.

From the outside in: request id (so that every response, a refusal included, carries ``X-Request-ID``), the request
log line, metrics, CORS (a browser's preflight is answered before any key is asked for, and a 401 still carries
``Access-Control-Allow-Origin`` so the page can read it), gzip, API keys, then the request guard just outside the
routes. Each ``add_middleware`` wraps the ones added before it, so they are added innermost first.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware

from service.admission import AdmissionMiddleware
from service.answers import MODEL_ID_HEADER
from service.auth import ApiKeyMiddleware, ApiKeys
from service.guards import RequestGuardMiddleware
from service.lifecycle import RequestLifecycleMiddleware
from service.logs import AccessLogMiddleware
from service.metrics import RequestMetricsMiddleware
from service.openapi import install_openapi
from service.request_ids import REQUEST_ID_HEADER, RequestIdMiddleware
from service.runtime import Runtime

GZIP_MINIMUM_BYTES = 1024
"""Smaller bodies are sent as they are: a gzip header and a round of deflate cost more than they save."""
GZIP_LEVEL = 6
"""zlib's default: within a few percent of level 9's size on JSON answers, at a fraction of its CPU."""
CORS_MAX_AGE_S = 600


def install_middleware(app: FastAPI, runtime: Runtime) -> None:
    """Add every middleware to ``app`` in order; with API keys, declare them in the OpenAPI schema too."""
    settings = runtime.settings
    keys = ApiKeys.from_settings(settings)
    # The guard refuses ambiguous requests before any route reads them; inside the metrics, so refusals are counted.
    # Bodies are charged to MAX_INFLIGHT_BYTES as they are read; a client that left or a shutdown ends the request.
    app.add_middleware(AdmissionMiddleware, budget=app.state.inflight_bytes)
    app.add_middleware(
        RequestGuardMiddleware,
        body_timeout_s=settings.body_timeout_s,
        max_header_count=settings.max_header_count,
        max_header_bytes=settings.max_header_bytes,
    )
    app.add_middleware(RequestLifecycleMiddleware)
    if keys is not None:
        app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(GZipMiddleware, minimum_size=GZIP_MINIMUM_BYTES, compresslevel=GZIP_LEVEL)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "HEAD", "POST"],
            allow_headers=["Authorization", "X-API-Key", "Content-Type", REQUEST_ID_HEADER, "traceparent"],
            expose_headers=[REQUEST_ID_HEADER, MODEL_ID_HEADER, "Retry-After", "WWW-Authenticate"],
            max_age=CORS_MAX_AGE_S,
        )
    app.add_middleware(RequestMetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(AccessLogMiddleware)
    app.add_middleware(RequestIdMiddleware)
    install_openapi(app, None if keys is None else lambda path: not keys.is_open(path))
