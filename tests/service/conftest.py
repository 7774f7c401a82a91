"""Fixtures for the service tests: a tiny CORAL model saved once per session, its predict config, ready apps.

The model is a few hundred parameters (Rescaling -> Conv -> pooling -> CoralLayer) so TensorFlow work stays small;
its biases are spread wide so that different chips get different ages. Nothing here imports the trainer.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image

from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
SHARED_FACES = ROOT.parent / "shared" / "data" / "faces"

IMG_SIZE = 64
NUM_CLASSES = 100
START_LABEL = 1
CONFIG_THRESHOLD = 0.45
"""Deliberately not the model's 0.5, so tests can see the config override it."""


def photo_path(name: str) -> Path:
    """A public-domain test photo from ``tests/fixtures`` or ``../shared/data/faces``; skip when neither has it."""
    for folder in (FIXTURES, SHARED_FACES):
        if (folder / name).is_file():
            return folder / name
    pytest.skip(f"{name} is in neither {FIXTURES} nor {SHARED_FACES}")


def image_bytes(width: int = 120, height: int = 90, fmt: str = "PNG", seed: int = 0) -> bytes:
    """A small random RGB image encoded as ``fmt``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


@dataclass(frozen=True)
class FakeFace:
    box: tuple[int, int, int, int]
    chip: np.ndarray


class FakeAligner:
    """Returns ``n_faces`` faces of decreasing size with distinct random chips, without dlib."""

    def __init__(self, n_faces: int) -> None:
        self.n_faces = n_faces

    def align(self, rgb: np.ndarray) -> list[FakeFace]:
        height, width = rgb.shape[:2]
        rng = np.random.default_rng(int(rgb[0, 0, 0]))
        faces = []
        for i in range(self.n_faces):
            side = max(4, min(width, height) // (i + 2))
            box = (i, i, i + side - 1, i + side - 1)
            faces.append(FakeFace(box, rng.integers(0, 256, (IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)))
        return faces


def build_tiny_model_file(path: Path, seed: int = 0, **metadata_overrides: object) -> Path:
    """Save a tiny untrained CORAL model with full metadata at ``path`` (weights drawn with ``seed``); return it."""
    import keras

    from core.artifact import save_model
    from core.coral import CoralLayer

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((IMG_SIZE, IMG_SIZE, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, CoralLayer(NUM_CLASSES, bias_spread=6.0)(x))
    metadata = {
        "start_label": START_LABEL,
        "num_classes": NUM_CLASSES,
        "end_label": START_LABEL + NUM_CLASSES - 1,
        "img_size": IMG_SIZE,
        "chip_padding": 0.25,
        "threshold": 0.5,
        "arch_type": "tiny-test",
        "arch_subtype": 0,
        "detector": "hog",
        "upsample": 0,
    }
    metadata.update(metadata_overrides)
    return save_model(model, path, metadata)


def write_predict_config(path: Path, model_file: Path, **overrides: object) -> Path:
    """Write a predict config matching the tiny model (``overrides`` change or add keys); return its path."""
    config = {
        "n_classes": NUM_CLASSES,
        "start_label": START_LABEL,
        "end_label": START_LABEL + NUM_CLASSES - 1,
        "img_size": IMG_SIZE,
        "threshold": CONFIG_THRESHOLD,
        "model_path": str(model_file),
    }
    config.update(overrides)
    path.write_text(json.dumps(config))
    return path


def wait_until_settled(client: TestClient, timeout_s: float = 60.0) -> int:
    """Poll ``/health`` until start-up has finished one way or the other; return the last status."""
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if runtime.ready or runtime.error:
            break
        time.sleep(0.05)
    return client.get("/health").status_code


@contextlib.contextmanager
def live_server(app: FastAPI, timeout_s: float = 120.0) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free localhost port in a background thread; yield its URL once ``/health``
    answers 200 (for clients that need a real socket, like ``tritonclient`` or a browser)."""
    import httpx
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout_s
        while not _healthy(httpx, f"{url}/health"):
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not become healthy within {timeout_s:g} s")
            time.sleep(0.1)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def _healthy(httpx: Any, url: str) -> bool:
    try:
        return bool(httpx.get(url, timeout=2).status_code == 200)
    except httpx.TransportError:
        return False


@pytest.fixture(scope="session")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model_file(tmp_path_factory.mktemp("model") / "tiny.h5")


@pytest.fixture(scope="session")
def config_file(model_file: Path) -> Path:
    return write_predict_config(model_file.parent / "predict_config.json", model_file)


@pytest.fixture(scope="session")
def settings(config_file: Path) -> ServiceSettings:
    return ServiceSettings(
        predict_config=config_file,
        max_upload_bytes=1_000_000,
        max_faces=3,
        batch_max_wait_ms=5,
        detect_workers=2,
    )


@pytest.fixture(scope="session")
def app(settings: ServiceSettings) -> FastAPI:
    from service.main import create_app

    return create_app(settings)


@pytest.fixture(scope="session")
def client(app: FastAPI) -> Iterator[TestClient]:
    """A started, ready client of the session app (real dlib aligner)."""
    with TestClient(app) as test_client:
        assert wait_until_settled(test_client) == 200, app.state.runtime.error
        yield test_client


@pytest.fixture
def fake_faces(app: FastAPI, client: TestClient) -> Iterator[Callable[[int], FakeAligner]]:
    """Swap the session app's aligner for a ``FakeAligner``: call the fixture with the number of faces."""
    from service.runtime import get_aligner

    def use(n_faces: int) -> FakeAligner:
        aligner = FakeAligner(n_faces)
        app.dependency_overrides[get_aligner] = lambda: aligner
        return aligner

    yield use
    app.dependency_overrides.clear()
