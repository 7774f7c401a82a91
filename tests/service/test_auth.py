"""API keys (``API_KEYS``, ``API_KEYS_FILE``), CORS (``CORS_ORIGINS``) and how ``/openapi.json`` declares them.

One app with keys from both settings and two allowed origins, started once for the module (tiny model, fake faces).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr

from core.errors import ConfigError
from service.auth import ApiKeys, presented_keys
from service.settings import ServiceSettings
from tests.service.conftest import FakeAligner, image_bytes, photo_path, wait_until_settled

KEY = "k3y-from-the-environment-0123456789"
FILE_KEY = "another-key-from-the-file-9876543210"
ORIGIN = "https://app.example.com"
OPEN_PATHS = [
    "/health",
    "/health/live",
    "/health/ready",
    "/v2/health/live",
    "/v2/health/ready",
    "/",
    "/static/app.js",
    "/docs",
    "/openapi.json",
]
PROTECTED = [
    ("GET", "/model"),
    ("GET", "/metrics"),
    ("POST", "/predict"),
    ("POST", "/predict/batch"),
    ("GET", "/v2/models/age"),
]


@pytest.fixture(scope="module")
def locked_settings(settings: ServiceSettings, tmp_path_factory: pytest.TempPathFactory) -> ServiceSettings:
    key_file = tmp_path_factory.mktemp("keys") / "keys.txt"
    key_file.write_text(f"# rotated 2026-12\n{FILE_KEY}  # the batch job's\n\n")
    return settings.model_copy(
        update={
            "api_keys": SecretStr(f"{KEY}, spare-key-not-used-here"),
            "api_keys_file": key_file,
            "cors_origins": (ORIGIN, "https://admin.example.com"),
        }
    )


@pytest.fixture(scope="module")
def locked_app(locked_settings: ServiceSettings) -> FastAPI:
    from service.main import create_app

    return create_app(locked_settings)


@pytest.fixture(scope="module")
def locked(locked_app: FastAPI) -> Iterator[TestClient]:
    from service.runtime import get_aligner

    with TestClient(locked_app) as client:
        assert wait_until_settled(client) == 200, locked_app.state.runtime.error
        locked_app.dependency_overrides[get_aligner] = lambda: FakeAligner(1)
        yield client
    locked_app.dependency_overrides.clear()


def _call(client: TestClient, method: str, path: str, headers: dict[str, str] | None = None):
    files = {"file": ("a.png", image_bytes(), "image/png")} if method == "POST" else None
    return client.request(method, path, files=files, headers=headers or {})


@pytest.mark.parametrize(("method", "path"), [*PROTECTED, ("GET", "/no/such/route")])
def test_no_key_is_401_with_a_bearer_challenge(locked: TestClient, method: str, path: str) -> None:
    response = _call(locked, method, path)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="age-estimation"'
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert (body["code"], body["status"]) == ("unauthorized", 401)
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_401_on_the_inference_protocol_carries_its_error_member(locked: TestClient) -> None:
    """tritonclient and KServe's clients read {"error": ...}: without it a refused key reads as a decoding failure."""
    response = locked.post("/v2/models/age/infer", json={"inputs": []})
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == body["detail"]
    assert "error" not in locked.post("/predict").json()  # the rest of the API answers plain problem details


@pytest.mark.parametrize(
    "headers",
    [{"Authorization": f"Bearer {KEY}"}, {"X-API-Key": KEY}, {"Authorization": f"bearer {FILE_KEY}"}],
    ids=["bearer", "x-api-key", "key-file"],
)
@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_either_header_with_a_known_key_is_let_in(
    locked: TestClient, headers: dict[str, str], method: str, path: str
) -> None:
    assert _call(locked, method, path, headers).status_code == 200


@pytest.mark.parametrize("path", OPEN_PATHS)
def test_probes_page_and_docs_need_no_key(locked: TestClient, path: str) -> None:
    assert locked.get(path).status_code == 200


def test_a_wrong_key_is_401_invalid_token_and_never_logged(
    locked: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = "not-the-key-but-close-" + KEY[:8]
    with caplog.at_level(logging.DEBUG):
        response = locked.get("/model", headers={"Authorization": f"Bearer {wrong}"})
        assert locked.get("/model", headers={"X-API-Key": KEY}).status_code == 200
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    logged = "\n".join(record.getMessage() + str(record.__dict__) for record in caplog.records)
    assert "wrong API key" in logged
    assert wrong not in logged
    assert KEY not in logged


def test_a_wrong_bearer_beside_a_good_x_api_key_is_let_in(locked: TestClient) -> None:
    assert locked.get("/model", headers={"Authorization": "Bearer nope", "X-API-Key": KEY}).status_code == 200


def test_key_comparison_takes_every_key_and_exact_matches_only() -> None:
    keys = ApiKeys.from_settings(ServiceSettings(api_keys=SecretStr("alpha,beta-longer-key, gamma ")))
    assert keys is not None
    assert [keys.accepts(key) for key in ("alpha", "beta-longer-key", "gamma")] == [True, True, True]
    assert not any(keys.accepts(key) for key in ("alph", "alphaa", "", "ALPHA", "gamma ", "ünïcode"))


@pytest.mark.parametrize("value", [",", " , ", "two words"])
def test_a_key_setting_without_a_usable_key_stops_start_up(value: str) -> None:
    with pytest.raises(ConfigError, match="API_KEYS"):
        ApiKeys.from_settings(ServiceSettings(api_keys=SecretStr(value)))


def test_an_empty_key_file_stops_start_up(tmp_path: Path) -> None:
    empty = tmp_path / "keys.txt"
    empty.write_text("# nobody yet\n\n")
    with pytest.raises(ConfigError, match="API_KEYS_FILE"):
        ApiKeys.from_settings(ServiceSettings(api_keys_file=empty))


def test_metrics_can_be_left_open_for_a_scraper() -> None:
    settings = ServiceSettings(api_keys=SecretStr("k"), metrics_require_key=False)
    keys = ApiKeys.from_settings(settings)
    assert keys is not None
    assert keys.is_open("/metrics")
    assert not keys.is_open("/model")
    assert ApiKeys.from_settings(ServiceSettings()) is None, "no key setting: the service is open"


def test_presented_keys_reads_both_headers() -> None:
    from starlette.datastructures import Headers

    assert presented_keys(Headers({"authorization": "Bearer  abc ", "x-api-key": "def"})) == ["abc", "def"]
    assert presented_keys(Headers({"authorization": "Basic abc"})) == []


def test_openapi_declares_both_schemes_and_secures_protected_operations(locked: TestClient) -> None:
    schema = locked.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert (schemes["bearerAuth"]["type"], schemes["bearerAuth"]["scheme"]) == ("http", "bearer")
    assert (schemes["apiKeyHeader"]["in"], schemes["apiKeyHeader"]["name"]) == ("header", "X-API-Key")
    predict = schema["paths"]["/predict"]["post"]
    assert predict["security"] == [{"bearerAuth": []}, {"apiKeyHeader": []}]
    assert "application/problem+json" in predict["responses"]["401"]["content"]
    assert "security" not in schema["paths"]["/health/live"]["get"]


def test_a_preflight_from_an_allowed_origin_succeeds_without_a_key(locked: TestClient) -> None:
    response = locked.options(
        "/predict",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


def test_a_preflight_from_another_origin_gets_no_allow_origin(locked: TestClient) -> None:
    response = locked.options(
        "/predict", headers={"Origin": "https://evil.example.net", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in response.headers
    answer = locked.get("/model", headers={"Origin": "https://evil.example.net", "X-API-Key": KEY})
    assert "access-control-allow-origin" not in answer.headers


def test_a_cross_origin_answer_exposes_its_ids_and_a_401_reaches_the_page(locked: TestClient) -> None:
    answer = _call(locked, "POST", "/predict", {"Origin": ORIGIN, "X-API-Key": KEY})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    exposed = answer.headers["access-control-expose-headers"].lower()
    assert "x-request-id" in exposed
    assert "x-model-id" in exposed
    refused = locked.get("/model", headers={"Origin": ORIGIN})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == ORIGIN


def test_without_cors_origins_no_cors_headers_are_sent(client: TestClient) -> None:
    response = client.get("/health", headers={"Origin": ORIGIN})
    assert "access-control-allow-origin" not in response.headers


@pytest.mark.browser
@pytest.mark.slow
def test_the_page_asks_for_a_key_and_then_shows_the_ages(locked_settings: ServiceSettings) -> None:
    from service.main import create_app
    from tests.service.conftest import live_server
    from tests.service.test_page import CHROMIUM, CHROMIUM_ARGS

    if not CHROMIUM.exists():
        pytest.skip(f"Debian's chromium is not installed at {CHROMIUM} (`apt-get install chromium`; .ci/run does)")
    from playwright.sync_api import expect, sync_playwright

    with live_server(create_app(locked_settings)) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{url}/")
            assert page.locator("#key-form").is_hidden(), "no key is asked for before the server wants one"
            page.set_input_files("#file", str(photo_path("astronaut.png")))
            expect(page.locator("#key-form")).to_be_visible(timeout=60_000)
            expect(page.locator("#status")).to_contain_text("API key")
            page.fill("#api-key", "a-wrong-key")
            page.click("#key-form button")
            expect(page.locator("#status")).to_contain_text("not accepted", timeout=60_000)
            page.fill("#api-key", KEY)
            page.click("#key-form button")
            expect(page.locator("#faces li")).to_have_count(1, timeout=60_000)
            assert page.locator("#key-form").is_hidden()
        finally:
            browser.close()
