"""Request IDs (``X-Request-ID``, W3C ``traceparent``) on every response, in error bodies and in the logs; the one
line per request; ``LOG_FORMAT=json`` for uvicorn's lines and the app's."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.logs import ACCESS_LOGGER, JsonLineFormatter, RequestContextFilter
from tests.service.conftest import image_bytes, photo_path

ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
JSON_KEYS = {"time", "level", "logger", "message", "request_id", "method", "path", "status", "duration_ms", "model_id"}


def test_a_new_id_is_made_for_each_request_without_one(client: TestClient) -> None:
    first, second = (client.get("/health/live").headers["x-request-id"] for _ in range(2))
    assert re.fullmatch("[0-9a-f]{32}", first)
    assert first != second


def test_the_clients_id_is_echoed_and_named_in_error_bodies(client: TestClient) -> None:
    response = client.get("/no/such/route", headers={"X-Request-ID": "gateway-7:abc/def"})
    assert response.headers["x-request-id"] == "gateway-7:abc/def"
    assert response.json()["request_id"] == "gateway-7:abc/def"


@pytest.mark.parametrize("unsafe", ["two words", "x" * 129, 'quote"d', "semi;colon"])
def test_an_unsafe_id_is_replaced_not_echoed(client: TestClient, unsafe: str) -> None:
    echoed = client.get("/health/live", headers={"X-Request-ID": unsafe}).headers["x-request-id"]
    assert re.fullmatch("[0-9a-f]{32}", echoed)


def test_a_traceparent_gives_its_trace_id_unless_an_id_was_sent(client: TestClient) -> None:
    assert client.get("/health/live", headers={"traceparent": TRACEPARENT}).headers["x-request-id"] == TRACE_ID
    both = {"traceparent": TRACEPARENT, "X-Request-ID": "mine-1"}
    assert client.get("/health/live", headers=both).headers["x-request-id"] == "mine-1"
    invalid = f"00-{'0' * 32}-00f067aa0ba902b7-01"
    assert client.get("/health/live", headers={"traceparent": invalid}).headers["x-request-id"] != "0" * 32


def test_each_request_logs_one_line_with_its_id_status_duration_and_model(
    client: TestClient, fake_faces, caplog: pytest.LogCaptureFixture
) -> None:
    fake_faces(1)
    # The service's own handlers carry this filter (service.logs.logging_config); caplog's gets it here.
    caplog.handler.addFilter(RequestContextFilter())
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        headers = {"X-Request-ID": "req-42", "traceparent": TRACEPARENT}
        answer = client.post("/predict", files={"file": ("a.png", image_bytes(), "image/png")}, headers=headers)
        client.get("/no/such/route", headers={"X-Request-ID": "req-43"})
    logged = {record.request_id: record for record in caplog.records if record.name == ACCESS_LOGGER}
    line = logged["req-42"]
    assert (line.method, line.path, line.status) == ("POST", "/predict", 200)
    assert line.model_id == answer.headers["x-model-id"]
    assert line.trace_id == TRACE_ID
    assert 0 < line.duration_ms < 60_000
    assert (logged["req-43"].status, logged["req-43"].model_id) == (404, None)


def test_the_json_format_writes_one_object_per_line_with_the_request_fields(client: TestClient, fake_faces) -> None:
    fake_faces(1)
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLineFormatter())
    handler.addFilter(RequestContextFilter())
    access = logging.getLogger(ACCESS_LOGGER)
    access.addHandler(handler)
    previous = access.level
    access.setLevel(logging.INFO)
    try:
        client.post(
            "/predict", files={"file": ("a.png", image_bytes(), "image/png")}, headers={"X-Request-ID": "json-1"}
        )
        logging.getLogger("service.test").warning("outside any request")
    finally:
        access.removeHandler(handler)
        access.setLevel(previous)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert set(record) == JSON_KEYS
    assert next(iter(record)) == "time"
    assert (record["level"], record["request_id"], record["method"], record["status"]) == (
        "INFO",
        "json-1",
        "POST",
        200,
    )
    assert record["model_id"].startswith("tiny@sha256:")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.slow
def test_age_serve_with_log_format_json_writes_uvicorns_lines_and_its_own_as_json(
    config_file: Path, tmp_path: Path
) -> None:
    port = _free_port()
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    env = {**os.environ, "LOG_FORMAT": "json", "TF_CPP_MIN_LOG_LEVEL": "3", "DETECT_WORKERS": "1"}
    command = [sys.executable, "-m", "service.main", "--port", str(port), "--config", str(config_file)]
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=stdout, stderr=stderr)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while not _answers(f"{url}/health"):
                assert process.poll() is None, err.read_text()
                assert time.monotonic() < deadline, "age-serve did not become ready in 120 s"
                time.sleep(0.2)
            files = {"file": ("a.png", photo_path("astronaut.png").read_bytes(), "image/png")}
            answer = httpx.post(f"{url}/predict", files=files, headers={"X-Request-ID": "served-1"}, timeout=60)
            assert answer.status_code == 200
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=30)
    lines = [json.loads(line) for line in (out.read_text() + err.read_text()).splitlines() if line.startswith("{")]
    assert all(set(line) >= JSON_KEYS for line in lines)
    uvicorn_lines = [line["message"] for line in lines if line["logger"].startswith("uvicorn")]
    assert any("Application startup complete" in message for message in uvicorn_lines), uvicorn_lines
    assert any(line["message"].startswith("ready: serving tiny@sha256:") for line in lines), "the app's own line"
    (served,) = [line for line in lines if line["request_id"] == "served-1"]
    assert (served["method"], served["path"], served["status"]) == ("POST", "/predict", 200)
    assert served["model_id"] == answer.json()["model_id"]
    text = [line for line in (out.read_text() + err.read_text()).splitlines() if not line.startswith("{")]
    assert not [line for line in text if "Uvicorn running" in line or "/predict" in line], text


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
