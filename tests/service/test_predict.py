"""POST /predict, GET /health, GET /metrics and GET / on a ready app with a tiny model.

The session app aligns with the real dlib ``FaceAligner``; tests that need an exact number of faces swap in a
``FakeAligner`` through the ``get_aligner`` dependency.
"""

from __future__ import annotations

import asyncio
import io
import struct
import zlib
from collections.abc import AsyncIterator

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import CONFIG_THRESHOLD, NUM_CLASSES, START_LABEL, image_bytes, photo_path


def _post(client: TestClient, data: bytes, name: str = "photo.png", **params: object) -> httpx.Response:
    return client.post("/predict", files={"file": (name, data, "application/octet-stream")}, params=params)


def _area(box: list[int]) -> int:
    return (box[2] - box[0] + 1) * (box[3] - box[1] + 1)


def _check_face(face: dict, threshold: float) -> None:
    logits = np.array(face["raw_logits"])
    probas = np.array(face["raw_probas"])
    assert logits.shape == probas.shape == (NUM_CLASSES - 1,)
    np.testing.assert_allclose(probas, 1 / (1 + np.exp(-logits)), rtol=1e-5, atol=1e-7)
    assert np.all(np.diff(probas) <= 1e-7), "CORAL probabilities must be non-increasing in k"
    assert face["threshold"] == pytest.approx(threshold)
    assert face["thresholded_probas"] == [int(p > threshold) for p in probas]
    assert face["result_value"] == START_LABEL + sum(face["thresholded_probas"])
    left, top, right, bottom = face["box"]
    assert all(isinstance(v, int) for v in face["box"])
    assert 0 <= left <= right
    assert 0 <= top <= bottom


def _check_body(body: dict, threshold: float = CONFIG_THRESHOLD) -> None:
    assert body["faces"], "faces must list at least the top-level face"
    for face in body["faces"]:
        _check_face(face, threshold)
    assert body["model_id"].startswith("tiny@sha256:"), "every answer names the model that gave it"
    top_level = {key: value for key, value in body.items() if key not in ("faces", "model_id")}
    largest = {key: value for key, value in body["faces"][0].items() if key != "age_probas"}
    assert top_level == largest, "the top-level fields are the largest face's (its distribution only in faces)"
    areas = [_area(face["box"]) for face in body["faces"]]
    assert areas == sorted(areas, reverse=True), "faces are listed largest first"


def test_health_reports_model_and_device(client: TestClient) -> None:
    response = client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["model"]["num_classes"] == NUM_CLASSES
    assert body["model"]["start_label"] == START_LABEL
    assert body["device"] == "CPU" or body["device"].startswith("GPU")


def test_real_photo_gives_one_face_with_every_field(client: TestClient) -> None:
    response = _post(client, photo_path("astronaut.png").read_bytes())
    assert response.status_code == 200, response.text
    body = response.json()
    _check_body(body)
    assert len(body["faces"]) == 1
    left, _, right, bottom = body["box"]
    assert right < 512
    assert bottom < 512
    assert 40 < right - left < 250, "the astronaut's face is roughly 90 pixels wide"


def test_real_group_photo_gives_several_faces(client: TestClient) -> None:
    response = _post(client, photo_path("2008_002506.jpg").read_bytes(), name="group.jpg")
    assert response.status_code == 200, response.text
    body = response.json()
    _check_body(body)
    assert len(body["faces"]) == 3
    assert len({tuple(face["box"]) for face in body["faces"]}) == 3


def test_faces_are_cut_at_max_faces(client: TestClient, fake_faces) -> None:
    fake_faces(5)
    body = _post(client, image_bytes()).json()
    _check_body(body)
    assert len(body["faces"]) == 3, "the session app has MAX_FACES=3"


def test_threshold_query_overrides_the_config(client: TestClient, fake_faces) -> None:
    fake_faces(2)
    data = image_bytes(seed=3)
    low = _post(client, data, threshold=0.05).json()
    high = _post(client, data, threshold=0.95).json()
    _check_body(low, threshold=0.05)
    _check_body(high, threshold=0.95)
    assert low["raw_logits"] == high["raw_logits"]
    assert low["result_value"] >= high["result_value"]


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "red").save(buffer, format="GIF")
    return buffer.getvalue()


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and header for a huge image, followed by one tiny compressed row."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


@pytest.mark.parametrize(
    ("data", "status", "words"),
    [
        (image_bytes()[:200], 400, "truncated or corrupt"),
        (b"", 400, "empty"),
        (b"name,age\nbob,42\n", 415, "not an image"),
        (_gif(), 415, "GIF"),
        (_png_header(10_000, 10_000), 413, "megapixels"),
        (_png_header(100_000, 100_000), 413, "too large"),
    ],
    ids=["truncated", "empty", "text", "gif", "bomb", "huge-bomb"],
)
def test_bad_images_get_their_status_and_a_detail(client: TestClient, data: bytes, status: int, words: str) -> None:
    response = _post(client, data)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status
    assert words in response.json()["detail"]


def test_no_face_is_422(client: TestClient, fake_faces) -> None:
    fake_faces(0)
    response = _post(client, image_bytes())
    assert response.status_code == 422
    assert "no face" in response.json()["detail"]


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"files": {"photo": ("a.png", image_bytes(), "image/png")}}, "no field named 'file'"),
        ({"json": {"file": "a.png"}}, "multipart/form-data"),
        ({"files": {"file": ("a.png", image_bytes(), "image/png")}, "params": {"threshold": 1}}, "threshold"),
        ({"files": {"file": ("a.png", image_bytes(), "image/png")}, "params": {"threshold": "x"}}, "threshold"),
    ],
    ids=["no-file-field", "not-multipart", "threshold-1", "threshold-text"],
)
def test_bad_requests_are_422(client: TestClient, kwargs: dict, words: str) -> None:
    response = client.post("/predict", **kwargs)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], str)
    assert words in response.json()["detail"]


def test_upload_over_the_limit_is_413(client: TestClient) -> None:
    response = _post(client, b"\xff\xd8\xff" + b"\0" * 1_100_000)
    assert response.status_code == 413
    assert "limit" in response.json()["detail"]


def test_streamed_upload_is_refused_before_it_is_all_read(app: FastAPI, client: TestClient) -> None:
    """No Content-Length: the service counts bytes as they arrive and stops at the limit (1 MB here)."""
    chunk_size, total_chunks = 64 * 1024, 256
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        yield b'--b\r\nContent-Disposition: form-data; name="file"; filename="x.jpg"\r\n\r\n'
        for _ in range(total_chunks):
            sent += 1
            yield b"\0" * chunk_size

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as async_client:
            headers = {"content-type": "multipart/form-data; boundary=b"}
            return await async_client.post("/predict", content=body(), headers=headers)

    response = asyncio.run(scenario())
    assert response.status_code == 413
    assert sent < 32, f"read {sent} chunks of 64 KiB, far past the 1 MB limit"


def _metric(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.runtime.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def test_a_bug_gives_a_logged_500_not_a_crash(
    app: FastAPI, client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    from service.runtime import get_aligner

    class Broken:
        def align(self, rgb: np.ndarray) -> list:
            raise ZeroDivisionError("bug in the aligner")

    timed_before = _metric(app, "age_http_request_seconds_count", route="/predict")
    app.dependency_overrides[get_aligner] = lambda: Broken()
    try:
        with caplog.at_level("ERROR", logger="service"):
            response = TestClient(app, raise_server_exceptions=False).post(
                "/predict", files={"file": ("a.png", image_bytes(), "image/png")}
            )
    finally:
        app.dependency_overrides.clear()
    assert response.status_code == 500
    assert response.json()["detail"] == "internal error; the service logged the details"
    assert response.json()["code"] == "internal_error"
    assert response.json()["request_id"] == response.headers["x-request-id"], "the 500 names its request"
    tracebacks = [record.exc_info[0] for record in caplog.records if record.exc_info]
    assert ZeroDivisionError in tracebacks, "the 500 left no traceback in the log"
    assert _metric(app, "age_http_request_seconds_count", route="/predict") == timed_before + 1


def test_metrics_count_requests_and_stages(app: FastAPI, client: TestClient, fake_faces) -> None:
    fake_faces(2)
    # The registry is the session app's, shared with other tests: compare values, not mere presence.
    names = {
        "ok": ("age_http_requests_total", {"method": "POST", "route": "/predict", "status": "200"}),
        "refused": ("age_http_requests_total", {"method": "POST", "route": "/predict", "status": "415"}),
        "batches": ("age_model_batch_size_count", {}),
        "faces": ("age_faces_per_image_count", {}),
        **{stage: ("age_stage_seconds_count", {"stage": stage}) for stage in ("decode", "detect", "model")},
    }
    before = {key: _metric(app, name, **labels) for key, (name, labels) in names.items()}
    assert _post(client, image_bytes()).status_code == 200
    assert _post(client, b"not an image").status_code == 415
    after = {key: _metric(app, name, **labels) for key, (name, labels) in names.items()}
    assert after["ok"] == before["ok"] + 1
    assert after["refused"] == before["refused"] + 1
    assert after["decode"] == before["decode"] + 2  # the refused upload was decoded too
    for key in ("detect", "model", "batches", "faces"):
        assert after[key] == before[key] + 1, key
    assert 'age_http_requests_total{method="POST",route="/predict",status="200"}' in client.get("/metrics").text


def test_the_page_and_its_script_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/static/app.js" in page.text
    script = client.get("/static/app.js")
    assert script.status_code == 200
    assert "/predict" in script.text
