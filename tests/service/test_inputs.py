"""Inputs beyond one multipart photo: base64 JSON, batches, already-aligned chips; probes and GET /model."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from tests.service.conftest import IMG_SIZE, image_bytes, photo_path


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _same_answer(ours: dict, theirs: dict) -> None:
    """Equal up to float round-off: the micro-batcher may run a face with others, and batch size moves last bits."""
    assert ours.keys() == theirs.keys()
    assert ours["box"] == theirs["box"]
    assert len(ours["faces"]) == len(theirs["faces"])
    np.testing.assert_allclose(ours["raw_logits"], theirs["raw_logits"], rtol=1e-5, atol=1e-5)


def test_base64_json_answers_byte_for_byte_as_the_form_does(client: TestClient) -> None:
    data = photo_path("astronaut.png").read_bytes()
    form = client.post("/predict", files={"file": ("a.png", data, "image/png")})
    as_json = client.post("/predict", json={"image": _b64(data)})
    assert form.status_code == as_json.status_code == 200
    assert as_json.content == form.content


def test_bad_base64_is_400_and_an_oversized_body_413(client: TestClient) -> None:
    bad = client.post("/predict", json={"image": "not base64 at all!"})
    assert bad.status_code == 400
    assert "base64" in bad.json()["detail"]
    huge = client.post("/predict", json={"image": _b64(b"\0" * 1_100_000)})
    assert huge.status_code == 413
    assert client.post("/predict", json={"picture": "x"}).status_code == 422


def test_a_batch_of_16_with_two_bad_photos_answers_in_order(client: TestClient) -> None:
    good = [photo_path("astronaut.png").read_bytes(), photo_path("2008_001009.jpg").read_bytes()]
    files = [("file", (f"{i}.img", good[i % 2], "application/octet-stream")) for i in range(16)]
    files[3] = ("file", ("notes.txt", b"plain text, not a photo", "text/plain"))
    files[11] = ("file", ("broken.png", image_bytes()[:60], "image/png"))
    response = client.post("/predict/batch", files=files)
    assert response.status_code == 200
    results = response.json()["results"]
    assert len(results) == 16
    assert [i for i, item in enumerate(results) if "detail" in item] == [3, 11]
    assert results[3]["status"] == 415
    assert results[11]["status"] == 400
    _same_answer(results[0], client.post("/predict", files={"file": ("a.png", good[0], "image/png")}).json())
    assert sum("result_value" in item for item in results) == 14


def test_a_json_batch_matches_the_form_batch(client: TestClient) -> None:
    data = photo_path("astronaut.png").read_bytes()
    form = client.post("/predict/batch", files=[("file", ("a.png", data, "image/png"))] * 2)
    as_json = client.post("/predict/batch", json={"images": [_b64(data), "%%%"]})
    _same_answer(as_json.json()["results"][0], form.json()["results"][0])
    assert as_json.json()["results"][1]["status"] == 400


def test_more_than_max_batch_files_is_413(client: TestClient) -> None:
    limit = client.app.state.runtime.settings.max_batch_files  # type: ignore[attr-defined]
    response = client.post("/predict/batch", json={"images": [_b64(b"x")] * (limit + 1)})
    assert response.status_code == 413
    assert "MAX_BATCH_FILES" in response.json()["detail"]


@pytest.mark.parametrize("route", ["/predict", "/predict/batch"])
def test_aligned_uploads_skip_detection_and_box_the_whole_image(client: TestClient, route: str) -> None:
    rng = np.random.default_rng(3)
    chip = rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, format="PNG")
    response = client.post(f"{route}?aligned=true", files={"file": ("chip.png", buffer.getvalue(), "image/png")})
    assert response.status_code == 200
    body = response.json() if route == "/predict" else response.json()["results"][0]
    assert body["box"] == [0, 0, 99, 79]
    assert len(body["faces"]) == 1
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    resized = np.asarray(Image.fromarray(chip).resize((IMG_SIZE, IMG_SIZE), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(body["raw_logits"], runtime.predictor.logits(resized[None])[0], atol=1e-5)


def test_probes_and_model_info(client: TestClient, model_file: Path) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    assert client.get("/health/ready").status_code == 200
    info = client.get("/model").json()
    assert info["sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert info["id"] == f"tiny@sha256:{info['sha256'][:12]}"
    assert (info["start_label"], info["end_label"], info["img_size"], info["chip_padding"]) == (1, 100, 64, 0.25)
    assert info["threshold"] == 0.45
    assert info["model_threshold"] == 0.5
    assert info["calibration"] is None
    json.dumps(info)


def test_ready_is_503_when_the_batcher_died(client: TestClient) -> None:
    batcher = client.app.state.runtime.batcher  # type: ignore[attr-defined]
    batcher.failure = "the model batcher stopped after an internal error (RuntimeError)"
    try:
        response = client.get("/health/ready")
        assert response.status_code == 503
        assert "batcher stopped" in response.json()["detail"]
        assert client.get("/health/live").status_code == 200
    finally:
        batcher.failure = None
    assert client.get("/health/ready").status_code == 200


def test_ready_is_503_before_the_model_is_warm(settings: object) -> None:
    from service.main import create_app

    app: FastAPI = create_app(settings)  # type: ignore[arg-type]
    unstarted = TestClient(app)  # no `with`: the lifespan (model loading) never runs
    assert unstarted.get("/health/ready").status_code == 503
    assert unstarted.get("/health/live").status_code == 200
