"""Problem details (RFC 9457): every error path answers ``application/problem+json`` with a stable ``code``.

The codes and their statuses are the ones agreed between issues 20 and 21; docs/serving.md lists every one.
"""

from __future__ import annotations

import re
import struct
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import service.main
from core.errors import AgeEstimationError
from service.errors import PROBLEMS, status_for
from service.settings import ServiceSettings
from tests.service.conftest import image_bytes, photo_path

ROOT = Path(__file__).resolve().parents[2]
PROBLEM_KEYS = {"type", "title", "status", "detail", "code", "request_id"}
AGREED = {
    "bad_request": 400,
    "corrupt_image": 400,
    "unsupported_image": 415,
    "image_too_large": 413,
    "image_too_complex": 422,
    "body_too_large": 413,
    "too_many_items": 413,
    "json_too_deep": 400,
    "headers_too_large": 431,
    "no_face": 422,
    "no_file": 422,
    "invalid_parameter": 422,
    "unauthorized": 401,
    "not_found": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "not_ready": 503,
    "overloaded": 503,
    "shutting_down": 503,
    "internal_error": 500,
}


def _problem(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert set(body) == PROBLEM_KEYS
    assert (body["status"], body["code"], body["type"]) == (status, code, f"urn:age-estimation:problem:{code}")
    assert body["title"] == PROBLEMS[code].title
    assert body["request_id"] == response.headers["x-request-id"]
    assert isinstance(body["detail"], str)
    assert "\n" not in body["detail"]
    return body


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))


def _post(client: TestClient, data: bytes, **params: object) -> httpx.Response:
    return client.post("/predict", files={"file": ("a.png", data, "image/png")}, params=params)


def test_the_codes_are_the_agreed_ones() -> None:
    assert {code: problem.status for code, problem in PROBLEMS.items()} == AGREED


def test_every_error_class_has_a_known_code() -> None:
    import service.routes.batch  # noqa: F401  (every module defining error classes is loaded by now)

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    for cls in subclasses(AgeEstimationError):
        assert re.fullmatch(r"[a-z]+(_[a-z]+)*", cls.code), cls
        assert cls.code in PROBLEMS, f"{cls.__name__}.code {cls.code!r} has no status"
    assert status_for(AgeEstimationError("a bug")) == 500


@pytest.mark.parametrize(
    ("request_args", "status", "code"),
    [
        ({"data": image_bytes()[:200]}, 400, "corrupt_image"),
        ({"data": b"name,age\nbob,42\n"}, 415, "unsupported_image"),
        ({"data": b"\xff\xd8\xff" + b"\0" * 1_100_000}, 413, "body_too_large"),
        ({"data": _png_header(20_000, 20_000)}, 413, "image_too_large"),
        ({"data": image_bytes(), "threshold": 2}, 422, "invalid_parameter"),
        ({"data": image_bytes(), "view": "all"}, 422, "invalid_parameter"),
    ],
    ids=["corrupt", "not-an-image", "too-large", "too-many-pixels", "threshold", "view"],
)
def test_predict_errors_carry_their_code(client: TestClient, request_args: dict, status: int, code: str) -> None:
    _problem(_post(client, **request_args), status, code)


def test_no_face_and_no_file(client: TestClient, fake_faces) -> None:
    fake_faces(0)
    _problem(_post(client, image_bytes()), 422, "no_face")
    _problem(client.post("/predict", files={"photo": ("a.png", image_bytes(), "image/png")}), 422, "no_file")


def test_bad_base64_is_a_bad_request_not_a_corrupt_image(client: TestClient) -> None:
    _problem(client.post("/predict", json={"image": "not base64 at all!"}), 400, "bad_request")


def test_unknown_route_and_wrong_method(client: TestClient) -> None:
    body = _problem(client.get("/no/such/route"), 404, "not_found")
    assert "/no/such/route" in body["detail"]
    wrong = client.get("/predict")
    _problem(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"


def test_a_repeated_query_parameter_refused_before_the_app(client: TestClient) -> None:
    _problem(client.post("/predict?coverage=0.5&coverage=0.9"), 422, "invalid_parameter")


def test_a_batch_item_error_has_its_code(client: TestClient, fake_faces) -> None:
    fake_faces(0)
    files = [("file", ("a.png", image_bytes(), "image/png")), ("file", ("b.png", b"GIF89a", "image/gif"))]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert [(item["status"], item["code"]) for item in results] == [(422, "no_face"), (415, "unsupported_image")]


@pytest.fixture
def loading_client(settings: ServiceSettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """An app whose model load waits until the test is done (then fails): the service is not ready throughout."""
    release = threading.Event()

    def load_later(runtime):
        release.wait(60)
        raise OSError("the test is over")

    monkeypatch.setattr(service.main, "_load", load_later)
    with TestClient(service.main.create_app(settings)) as client:
        yield client
        release.set()


def test_not_ready_is_a_503_with_retry_after(loading_client: TestClient) -> None:
    for response in (_post(loading_client, image_bytes()), loading_client.get("/health/ready")):
        _problem(response, 503, "not_ready")
        assert response.headers["retry-after"] == "5"


def test_openapi_describes_every_error_as_a_problem(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    errors = [
        (path, status, response)
        for path, item in schema["paths"].items()
        for operation in item.values()
        for status, response in operation["responses"].items()
        if int(status) >= 400
    ]
    assert errors, "the routes document their errors"
    for path, status, response in errors:
        assert list(response["content"]) == ["application/problem+json"], (path, status)
    assert set(schema["components"]["schemas"]["ErrorResponse"]["properties"]) == PROBLEM_KEYS
    assert "HTTPValidationError" not in schema["components"]["schemas"]


def test_the_docs_list_every_code() -> None:
    docs = (ROOT / "docs" / "serving.md").read_text()
    assert [code for code in PROBLEMS if f"| `{code}` | {PROBLEMS[code].status} |" not in docs] == []


def test_a_real_photo_still_answers_200(client: TestClient) -> None:
    assert _post(client, photo_path("astronaut.png").read_bytes()).status_code == 200
