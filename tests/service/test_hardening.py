"""Hostile and odd requests (issue 14): degenerate images, HEAD, what /health tells, page headers, offline docs,
NaN and repeated query parameters."""

from __future__ import annotations

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

SHAPES = [(1, 2048), (1, 65535), (2048, 1), (1, 4097), (2, 9000), (9000, 2), (3, 1100), (1, 1)]


def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("shape", SHAPES)
def test_one_pixel_and_extreme_aspect_photos_are_never_a_5xx(client: TestClient, shape: tuple[int, int]) -> None:
    response = client.post("/predict", files={"file": ("a.png", _png(*shape), "image/png")})
    assert response.status_code == 422, response.text
    assert "no face" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/", "/health", "/metrics"])
def test_head_answers_like_get_without_a_body(client: TestClient, path: str) -> None:
    head = client.head(path)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == client.get(path).headers["content-type"]


def test_health_tells_only_what_a_client_needs(client: TestClient) -> None:
    body = client.get("/health").json()
    assert set(body) == {"status", "model", "device"}
    # The forward pass's runtime and precision and the architecture are told too (issue 22); never paths or data.
    assert set(body["model"]) == {
        "id",
        "architecture",
        "start_label",
        "end_label",
        "num_classes",
        "img_size",
        "runtime",
        "precision",
    }
    assert "csv" not in str(body).lower()


def test_the_page_sends_security_headers(client: TestClient) -> None:
    headers = client.get("/").headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert "default-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]


def test_docs_load_swagger_ui_from_this_server(client: TestClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "cdn" not in page.text.lower()
    for asset in ("/docs-assets/swagger-ui-bundle.js", "/docs-assets/swagger-ui.css"):
        assert asset in page.text
        assert client.get(asset).status_code == 200
    assert client.get("/redoc").status_code == 404


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf"])
def test_a_non_finite_threshold_is_refused_as_such(client: TestClient, value: str) -> None:
    response = client.post(f"/predict?threshold={value}", files={"file": ("a.png", _png(8, 8), "image/png")})
    assert response.status_code == 422
    assert "threshold" in response.json()["detail"]
    assert "finite" in response.json()["detail"]


def test_a_repeated_query_parameter_is_refused_naming_it(client: TestClient) -> None:
    response = client.post("/predict?threshold=0.3&threshold=0.7", files={"file": ("a.png", _png(8, 8))})
    assert response.status_code == 422
    assert "'threshold'" in response.json()["detail"]


def test_a_large_jpeg_is_decoded_reduced_and_boxes_stay_in_full_size_pixels(client: TestClient) -> None:
    from tests.service.conftest import FIXTURES

    astronaut = Image.open(FIXTURES / "astronaut.png").convert("RGB")  # 512x512, face at about (179, 83)-(266, 170)
    buffer = io.BytesIO()
    astronaut.resize((4096, 4096), Image.Resampling.BILINEAR).save(buffer, format="JPEG", quality=60)
    response = client.post("/predict", files={"file": ("big.jpg", buffer.getvalue(), "image/jpeg")})
    assert response.status_code == 200, response.text
    left, top, right, bottom = response.json()["box"]
    # Decoded at 1/2 scale (2048 px, DECODE_SIDE 1536): the box must come back multiplied by 8, not by 4.
    expected = (179 * 8, 83 * 8, 266 * 8, 170 * 8)
    assert max(abs(got - want) for got, want in zip((left, top, right, bottom), expected, strict=True)) < 120


def test_a_repeated_file_field_is_refused_naming_it(client: TestClient) -> None:
    files = [("file", ("a.png", _png(8, 8), "image/png")), ("file", ("b.png", _png(9, 9), "image/png"))]
    response = client.post("/predict", files=files)
    assert response.status_code == 422
    assert "'file'" in response.json()["detail"]
