"""Hostile uploads buy no CPU, no memory and no 500 (issue 20), against the session app and one with tight limits.

Each test here fails without the fix it names: the decode deadline, the decoder boundary, a batch's bad item, the
JSON limits, admission control, bounded metric labels, header limits, no Host-built redirect, the docs assets.
"""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from service.detection import DetectionPool
from service.settings import ServiceSettings
from tests.hostile import MUTANTS, mutated, scan_bomb, tga_header
from tests.service.conftest import photo_path, wait_until_settled


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


def _astronaut() -> bytes:
    return _jpeg(Image.open(photo_path("astronaut.png")).convert("RGB"))


@pytest.fixture(scope="module")
def strict_app(settings: ServiceSettings) -> Iterator[tuple[FastAPI, TestClient]]:
    """An app with a short decode deadline, no scan cap to stop a bomb first, and small memory budgets."""
    from service.main import create_app

    tight = settings.model_copy(
        update={
            "decode_timeout_s": 2.0,
            "max_jpeg_scans": 1_000_000,
            "max_upload_bytes": 3_000_000,
            "max_inflight_bytes": 2_000_000,
            "max_inflight_pixels": 1_000_000,
        }
    )
    app = create_app(tight)
    with TestClient(app) as client:
        assert wait_until_settled(client) == 200, app.state.runtime.error
        yield app, client


def test_a_decode_over_its_deadline_is_stopped_and_the_next_photo_answers(
    strict_app: tuple[FastAPI, TestClient],
) -> None:
    app, client = strict_app
    pool = app.state.runtime.detect_pool
    assert isinstance(pool, DetectionPool)
    killed = pool.decoders.killed
    bomb = scan_bomb(side=1000, scans=120_000)  # about 8 s of CPU without the deadline
    response = client.post("/predict", files={"file": ("bomb.jpg", bomb)})
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "image_too_complex"
    assert "DECODE_TIMEOUT_S" in response.json()["detail"]
    assert pool.decoders.killed == killed + 1
    assert client.post("/predict", files={"file": ("a.jpg", _astronaut())}).status_code == 200


def test_a_scan_bomb_is_refused_before_decoding(client: TestClient) -> None:
    response = client.post("/predict", files={"file": ("bomb.jpg", scan_bomb(side=256, scans=500))})
    assert response.status_code == 422
    assert response.json()["code"] == "image_too_complex"
    assert "scans" in response.json()["detail"]


@pytest.mark.parametrize(("fmt", "seed"), MUTANTS, ids=[fmt for fmt, _ in MUTANTS])
def test_a_mutant_of_another_format_is_a_415_logged_on_one_line(
    client: TestClient, caplog: pytest.LogCaptureFixture, fmt: str, seed: int
) -> None:
    with caplog.at_level(logging.INFO, logger="service"):
        response = client.post("/predict", files={"file": ("x.bin", mutated(fmt, seed))})
    assert response.status_code == 415, response.text
    refused = [record for record in caplog.records if "refused an upload" in record.getMessage()]
    assert len(refused) == 1
    assert refused[0].exc_info is None
    assert "\n" not in refused[0].getMessage()


def test_a_batch_with_one_hostile_item_answers_the_others(client: TestClient) -> None:
    photo = _astronaut()
    files = [("file", ("a.jpg", photo)), ("file", ("t.tga", tga_header())), ("file", ("b.jpg", photo))]
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200, response.text
    first, bad, last = response.json()["results"]
    assert bad["status"] == 415
    assert first["faces"]
    assert last["faces"]


def test_json_nested_deeper_than_the_limit_is_a_400(client: TestClient) -> None:
    body = b'{"image": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "json_too_deep"


def test_a_json_number_of_5000_digits_is_a_400(client: TestClient) -> None:
    body = b'{"image": "aGVsbG8=", "n": ' + b"7" * 5000 + b"}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "json_too_deep"


def test_a_json_batch_of_many_items_is_refused_before_it_is_parsed(client: TestClient) -> None:
    body = b'{"images": [' + b"{}," * 300_000 + b"{}]}"
    response = client.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "too_many_items"
    assert "MAX_BATCH_FILES" in response.json()["detail"]


def test_a_body_over_the_in_flight_byte_budget_is_a_503_with_retry_after(
    strict_app: tuple[FastAPI, TestClient],
) -> None:
    app, client = strict_app
    data = np.random.default_rng(3).integers(0, 256, 2_200_000, dtype=np.uint8).tobytes()
    response = client.post("/predict", files={"file": ("big.jpg", b"\xff\xd8\xff" + data)})
    assert response.status_code == 503, response.text
    assert response.json()["code"] == "overloaded"
    assert "MAX_INFLIGHT_BYTES" in response.json()["detail"]
    assert response.headers["retry-after"]
    assert app.state.inflight_bytes.used == 0


def test_a_photo_over_the_in_flight_pixel_budget_is_a_503(strict_app: tuple[FastAPI, TestClient]) -> None:
    app, client = strict_app
    big = _jpeg(Image.new("RGB", (1200, 1000), "grey"))  # 1.2 MP against a budget of 1 MP
    response = client.post("/predict", files={"file": ("big.jpg", big)})
    assert response.status_code == 503, response.text
    assert "MAX_INFLIGHT_PIXELS" in response.json()["detail"]
    assert app.state.runtime.detect_pool.pixels.used == 0


def test_odd_methods_are_one_metrics_label(client: TestClient) -> None:
    for i in range(3):
        client.request("X" * 2000 + str(i), "/health")
    text = client.get("/metrics").text
    assert 'method="other"' in text
    assert "XXXX" not in text


def test_too_many_headers_are_a_431(client: TestClient) -> None:
    headers = {f"x-h{i}": "v" for i in range(150)}
    response = client.get("/health", headers=headers)
    assert response.status_code == 431
    assert response.json()["code"] == "headers_too_large"


def test_headers_over_the_byte_limit_are_a_431(client: TestClient) -> None:
    response = client.get("/health", headers={"x-big": "v" * 40_000})
    assert response.status_code == 431


def test_no_redirect_is_built_from_the_host_header(client: TestClient) -> None:
    response = client.get("/health/", headers={"host": "evil.example"}, follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers


@pytest.mark.parametrize("name", ["index.html", "index.j2", "swagger-ui-bundle.js.map", "oauth2-redirect.html"])
def test_docs_assets_serve_nothing_but_what_docs_loads(client: TestClient, name: str) -> None:
    assert client.get(f"/docs-assets/{name}").status_code == 404
    page = client.get("/docs").text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png"):
        assert f"/docs-assets/{asset}" in page
        assert client.get(f"/docs-assets/{asset}").status_code == 200


def test_a_refused_json_body_is_never_parsed_whole(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    parsed: list[int] = []
    monkeypatch.setattr(json, "loads", lambda raw, **kw: parsed.append(len(raw)))
    body = b'{"images": [' + b"1," * 100 + b"1]}"
    response = client.post("/predict/batch", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 413
    assert parsed == []


def test_a_5000_digit_number_in_an_inference_request_is_a_400(client: TestClient) -> None:
    tensor = b'{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}'
    body = b'{"inputs": [' + tensor + b'], "id": ' + b"7" * 5000 + b"}"
    response = client.post("/v2/models/age/infer", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text


def test_the_app_returns_freed_memory_once_requests_stop(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from service import memory

    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1) or True)
    assert client.post("/predict", files={"file": ("a.jpg", _astronaut())}).status_code == 200
    deadline = time.monotonic() + 30  # MEMORY_TRIM_S is 2 s: a poll with a generous deadline, not a timing
    while not trims and time.monotonic() < deadline:
        time.sleep(0.1)
    assert trims, "the lifespan's trimmer never ran after a request"


def test_a_one_image_json_body_full_of_other_values_is_malformed_not_a_batch(client: TestClient) -> None:
    """/predict takes one image: a body of many values is a bad request (400), not a batch over its limit (413,
    which OpenAPI clients and schemathesis read as "accepted"), and its message does not talk of batches."""
    body = b'{"other": [' + b"1," * 100 + b"1]}"
    response = client.post("/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"
    assert "MAX_BATCH_FILES" not in response.json()["detail"]
