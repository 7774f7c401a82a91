"""``GET /``: the single-page web client (plain HTML + JavaScript from ``service/static``, no build step)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The web page; its script and stylesheet are served under ``/static``."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")
