"""``GET /``: the single-page web client (plain HTML + JavaScript from ``service/static``, no build step), and
``GET /docs``: Swagger UI served from the ``swagger-ui-bundle-v2`` package, so it works on a host without internet.

``/docs-assets`` serves exactly the three files ``/docs`` loads, by name: the package's folder also holds a stock
``index.html`` that loads the petstore example from the internet, a Jinja template and source maps.
"""

from __future__ import annotations

from pathlib import Path

import swagger_ui_bundle
from fastapi import APIRouter, HTTPException
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"
SWAGGER_UI_DIR = Path(swagger_ui_bundle.swagger_ui_path)
"""Swagger UI's JavaScript and CSS, of which ``/docs-assets`` serves :data:`DOCS_ASSETS`."""

DOCS_ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "favicon-32x32.png": "image/png",
}
"""The files ``GET /docs`` loads, and their media types."""

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
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",  # each of these is in DOCS_ASSETS
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )
    page.headers.update({"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"})
    return page


@router.api_route("/docs-assets/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def docs_asset(name: str) -> FileResponse:
    """One of the files ``/docs`` loads; anything else in Swagger UI's folder is 404."""
    media_type = DOCS_ASSETS.get(name)
    if media_type is None:
        raise HTTPException(status_code=404, detail=f"no such asset: /docs-assets/{name}")
    return FileResponse(SWAGGER_UI_DIR / name, media_type=media_type, headers={"X-Content-Type-Options": "nosniff"})
