"""Lean and compressed answers: ``view=basic|full``, ``model_id`` in every body and ``X-Model-Id``, floats at
float32's shortest round-trip form, gzip on request; the issue's size targets with the shipped model."""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.answers import shortest_float32
from service.settings import DEFAULT_PREDICT_CONFIG, ServiceSettings, load_predict_config
from tests.service.conftest import image_bytes, photo_path

BASIC_FACE_FIELDS = {"result_value", "age_interval", "coverage", "calibrated", "uncertain", "box"}
FLOAT_FIELDS = ("raw_logits", "raw_probas", "age_probas")


def _post(client: TestClient, data: bytes, encoding: str = "identity", **params: object) -> httpx.Response:
    files = {"file": ("photo.png", data, "image/png")}
    return client.post("/predict", files=files, params=params, headers={"Accept-Encoding": encoding})


def test_basic_view_has_only_the_age_interval_and_box_of_each_face(client: TestClient, fake_faces) -> None:
    fake_faces(3)
    full = _post(client, image_bytes()).json()
    basic = _post(client, image_bytes(), view="basic").json()
    assert set(basic) == {"model_id", "faces"}
    assert basic["model_id"] == full["model_id"]
    assert len(basic["faces"]) == 3
    for lean, rich in zip(basic["faces"], full["faces"], strict=True):
        assert set(lean) == BASIC_FACE_FIELDS
        assert lean == {key: rich[key] for key in BASIC_FACE_FIELDS}, "basic is a subset of full, value for value"


def test_basic_view_with_min_age_adds_p_at_least_and_at_least(client: TestClient, fake_faces) -> None:
    fake_faces(2)
    full = _post(client, image_bytes(), min_age=40).json()
    basic = _post(client, image_bytes(), min_age=40, view="basic").json()
    for lean, rich in zip(basic["faces"], full["faces"], strict=True):
        assert set(lean) == BASIC_FACE_FIELDS | {"p_at_least", "at_least"}
        assert (lean["p_at_least"], lean["at_least"]) == (rich["p_at_least"], rich["at_least"])


def test_an_unknown_view_is_an_invalid_parameter(client: TestClient) -> None:
    response = _post(client, image_bytes(), view="everything")
    assert response.status_code == 422
    assert response.json()["code"] == "invalid_parameter"
    assert "view" in response.json()["detail"]


def test_model_id_header_equals_the_body_and_get_model(client: TestClient, fake_faces) -> None:
    fake_faces(1)
    for view in ("full", "basic"):
        response = _post(client, image_bytes(), view=view)
        assert response.headers["x-model-id"] == response.json()["model_id"] == client.get("/model").json()["id"]


def test_every_batch_item_carries_model_id_in_the_view_asked(client: TestClient, fake_faces) -> None:
    fake_faces(1)
    files = [("file", ("a.png", image_bytes(seed=1), "image/png")), ("file", ("b.txt", b"not an image", "text/plain"))]
    for view in ("full", "basic"):
        response = client.post("/predict/batch", files=files, params={"view": view})
        answered, failed = response.json()["results"]
        assert answered["model_id"] == response.headers["x-model-id"]
        assert ("raw_logits" in answered) is (view == "full")
        assert failed == {"detail": failed["detail"], "status": 415, "code": "unsupported_image"}


def test_floats_are_float32s_written_at_their_shortest(client: TestClient, fake_faces) -> None:
    fake_faces(2)
    response = _post(client, image_bytes())
    for face in response.json()["faces"]:
        for field in FLOAT_FIELDS:
            # Each is the shortest decimal that reads back as its float32 (numpy's str of a float32).
            assert [repr(value) for value in face[field]] == [str(np.float32(value)) for value in face[field]]
    # On the wire: every number as few digits as its float32 needs, none of a float64's 17.
    numbers = re.findall(rb"-?\d+\.\d+(?:e-?\d+)?", response.content)
    assert len(numbers) > 2 * 3 * 99
    for number in numbers:
        digits = number.split(b"e")[0].lstrip(b"-").replace(b".", b"").lstrip(b"0")
        assert len(digits) <= 9, number
        assert str(np.float32(float(number))) in (number.decode(), number.decode().replace("e-", "e-0"))


def test_shortest_float32_reads_back_exactly_and_is_shortest() -> None:
    values = np.random.default_rng(0).normal(0, 5, 2000).astype(np.float32)
    values = np.concatenate([values, np.float32([0.1, 1e-8, 3.4028235e38, 1.0, -0.0])])
    written = shortest_float32(values)
    assert np.array_equal(np.float32(written), values), "every value reads back as the same float32"
    assert repr(written[-5]) == "0.1", "0.1f is written 0.1, not 0.10000000149011612"
    assert [repr(value) for value in written[:2000]] == [str(np.float32(value)) for value in values[:2000]]


def test_gzip_when_accepted_and_the_body_is_over_1_kb(client: TestClient, fake_faces) -> None:
    fake_faces(1)
    plain = _post(client, image_bytes())
    assert "content-encoding" not in plain.headers
    raw = _post(client, image_bytes(), encoding="gzip")
    assert raw.headers["content-encoding"] == "gzip"
    assert int(raw.headers["content-length"]) < len(plain.content) / 2
    assert raw.json() == plain.json(), "httpx decompressed it to the same body"
    small = _post(client, image_bytes(), encoding="gzip", view="basic")
    assert len(small.content) < 1024
    assert "content-encoding" not in small.headers, "a body under 1 KB is sent as it is"


def test_gzipped_bytes_on_the_wire_decompress_to_the_body(client: TestClient, fake_faces) -> None:
    """Read the raw bytes (no client-side decoding) to see the compression itself."""
    fake_faces(1)
    files = {"file": ("photo.png", image_bytes(), "image/png")}
    request = client.build_request("POST", "/predict", files=files, headers={"Accept-Encoding": "gzip"})
    response = client.send(request, stream=True)
    wire = b"".join(response.iter_raw())
    response.close()
    assert response.headers["content-encoding"] == "gzip"
    assert gzip.decompress(wire).startswith(b'{"raw_logits":[')


@pytest.fixture(scope="module")
def shipped_client() -> Iterator[TestClient]:
    """The service with the shipped model (``configs/predict_config.json``), the one the size targets are about."""
    from service.main import create_app

    model = load_predict_config(DEFAULT_PREDICT_CONFIG).resolve_model_path(DEFAULT_PREDICT_CONFIG)
    if not model.is_file():
        pytest.skip(f"no model committed at {model}")
    app = create_app(ServiceSettings(detect_workers=1))
    with TestClient(app) as client:
        runtime = app.state.runtime
        deadline = time.monotonic() + 300
        while not (runtime.ready or runtime.error) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.ready, runtime.error
        yield client


@pytest.mark.slow
@pytest.mark.parametrize("name", ["astronaut.png", "Tom_Cruise_avp_2014_4.jpg", "2008_002079.jpg"])
def test_one_face_answers_fit_the_size_targets(shipped_client: TestClient, name: str) -> None:
    data = photo_path(name).read_bytes()
    full = _post(shipped_client, data)
    basic = _post(shipped_client, data, view="basic")
    assert len(full.json()["faces"]) == len(basic.json()["faces"]) == 1
    assert len(basic.content) <= 600, basic.text
    assert len(full.content) <= 7000, f"{len(full.content)} bytes"
    zipped = _post(shipped_client, data, encoding="gzip")
    assert zipped.headers["content-encoding"] == "gzip"
    assert int(zipped.headers["content-length"]) <= len(full.content) / 3
