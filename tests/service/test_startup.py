"""Start-up: 503 until the model is warm, and a clean refusal (one line, exit 1) of a bad model or config."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import h5py
import pytest
from fastapi.testclient import TestClient

from service.main import create_app, main
from service.settings import ServiceSettings
from tests.service.conftest import ROOT, wait_until_settled, write_predict_config


@pytest.fixture
def truncated_model(tmp_path: Path, model_file: Path) -> Path:
    bad = tmp_path / "truncated.h5"
    bad.write_bytes(model_file.read_bytes()[:2000])
    return bad


@pytest.fixture
def unloadable_model(tmp_path: Path, model_file: Path) -> Path:
    """Metadata intact (so the pre-flight check passes) but the Keras model config is garbage."""
    bad = tmp_path / "unloadable.h5"
    bad.write_bytes(model_file.read_bytes())
    with h5py.File(bad, "a") as handle:
        handle.attrs["model_config"] = json.dumps({"class_name": "NoSuchLayer", "config": {}})
    return bad


def test_health_is_503_until_the_model_is_warm(monkeypatch: pytest.MonkeyPatch, settings: ServiceSettings) -> None:
    import service.main

    release = threading.Event()
    real_load = service.main._load

    def slow_load(chosen: ServiceSettings):
        release.wait(timeout=30)
        return real_load(chosen)

    monkeypatch.setattr(service.main, "_load", slow_load)
    with TestClient(create_app(settings)) as client:
        loading = client.get("/health")
        assert loading.status_code == 503
        assert "loading" in loading.json()["detail"]
        assert client.post("/predict", files={"file": ("a.png", b"x")}).status_code == 503
        release.set()
        assert wait_until_settled(client) == 200


def test_a_corrupt_model_never_becomes_ready(truncated_model: Path, config_file: Path) -> None:
    reasons: list[str] = []
    settings = ServiceSettings(predict_config=config_file, model_path=truncated_model)
    with TestClient(create_app(settings, on_fatal=reasons.append)) as client:
        assert wait_until_settled(client) == 503
        assert "truncated.h5" in client.get("/health").json()["detail"]
    assert len(reasons) == 1
    assert "truncated.h5" in reasons[0]


def test_age_serve_refuses_a_corrupt_model_with_one_line(truncated_model: Path, config_file: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service.main", "--model", str(truncated_model), "--config", str(config_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "truncated.h5" in lines[0]
    assert "Traceback" not in result.stderr


def test_age_serve_refuses_a_mismatched_predict_config(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_predict_config(tmp_path / "c.json", model_file, n_classes=50, end_label=50)
    assert main(["--config", str(config)]) == 1
    error = capsys.readouterr().err.strip()
    assert "\n" not in error
    assert "n_classes is 50" in error
    assert "num_classes 100" in error
    assert str(config) in error


def test_age_serve_refuses_an_unknown_config_key(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_predict_config(tmp_path / "c.json", model_file, batch=8)
    assert main(["--config", str(config)]) == 1
    assert "unknown key 'batch'" in capsys.readouterr().err


_BROKEN_LOAD = """
import sys
import service.main

def broken_load(settings):
    raise RuntimeError("Error deserializing object of type int\\n   while deserializing a dlib::shape_predictor")

service.main._load = broken_load
sys.exit(service.main.main(sys.argv[1:]))
"""


def test_any_start_up_exception_ends_age_serve_with_one_line(config_file: Path) -> None:
    """Not only the expected error types: dlib's RuntimeError (corrupt landmark file) once left /health at 503."""
    result = subprocess.run(
        [sys.executable, "-c", _BROKEN_LOAD, "--port", "0", "--log-level", "warning", "--config", str(config_file)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("age-serve:")]
    expected = "age-serve: cannot start: RuntimeError: Error deserializing object of type int while deserializing"
    assert lines == [f"{expected} a dlib::shape_predictor"], result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_age_serve_stops_when_the_model_fails_to_load(unloadable_model: Path, config_file: Path) -> None:
    """The metadata passes the pre-flight check, the Keras load fails in the lifespan: exit 1, one line."""
    result = subprocess.run(
        [
            *(sys.executable, "-m", "service.main", "--port", "0", "--log-level", "warning"),
            *("--model", str(unloadable_model), "--config", str(config_file)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("age-serve:")]
    assert len(error_lines) == 1, result.stderr
    assert "unloadable.h5" in error_lines[0]
    assert "Traceback" not in result.stderr


def test_a_dead_batcher_makes_the_service_unready_and_predict_503(settings: ServiceSettings) -> None:
    from service.runtime import get_aligner
    from tests.service.conftest import FakeAligner, image_bytes

    app = create_app(settings)
    app.dependency_overrides[get_aligner] = lambda: FakeAligner(1)
    with TestClient(app) as client:
        assert wait_until_settled(client) == 200
        batcher = app.state.runtime.batcher

        async def crash(batch: object) -> None:
            raise ZeroDivisionError("bug in the collector")

        batcher._run = crash
        first = client.post("/predict", files={"file": ("a.png", image_bytes())})
        assert first.status_code == 503
        assert "batcher stopped" in first.json()["detail"]
        health = client.get("/health")
        assert health.status_code == 503
        assert "batcher stopped" in health.json()["detail"]
        assert client.post("/predict", files={"file": ("a.png", image_bytes())}).status_code == 503
