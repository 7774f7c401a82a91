"""``GET /``: the single-page web client (plain HTML + JavaScript from ``service/static``, no build step), and
``GET /docs``: Swagger UI served from the ``swagger-ui-bundle-v2`` package, so it works on a host without internet.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
SWAGGER_UI_DIR = Path(swagger_ui_bundle.swagger_ui_path)
"""Swagger UI's JavaScript and CSS, mounted at ``/docs-assets`` by the app factory."""

PAGE_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # The page loads its own script and stylesheet only; photos are shown from blob: URLs of the user's files.
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
}

router = APIRouter()


@router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
async def index() -> FileResponse:
    """The web page; its script and stylesheet are served under ``/static``."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/docs", include_in_schema=False)
async def docs() -> HTMLResponse:
    """Swagger UI for ``/openapi.json``, with every asset served by this process."""
    page = get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="CORAL age estimation - API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
    page.headers.update({"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"})
    return page
