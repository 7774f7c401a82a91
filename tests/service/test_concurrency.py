"""16 simultaneous requests: all answered, and their faces share model calls (visible in /metrics)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import ServiceSettings
from tests.service.conftest import FakeAligner, image_bytes, wait_until_settled

CLIENTS = 16


class GatheringAligner(FakeAligner):
    """One face per image, released only when all 16 detection threads are in, as under real load."""

    def __init__(self) -> None:
        super().__init__(n_faces=1)
        self.barrier = threading.Barrier(CLIENTS)

    def align(self, rgb: np.ndarray) -> list:
        self.barrier.wait(timeout=30)
        return super().align(rgb)


def _metric(text: str, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", text, flags=re.MULTILINE)
    assert match, f"{name} missing from /metrics"
    return float(match.group(1))


def test_parallel_requests_are_answered_and_batched(config_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import service.main

    # Replaces the aligner before start-up, so no dlib model is loaded for each of the 16 detection threads.
    monkeypatch.setattr(service.main, "aligner_from_metadata", lambda metadata, max_faces=None: GatheringAligner())
    settings = ServiceSettings(
        predict_config=config_file, batch_max_size=32, batch_max_wait_ms=50, detect_workers=CLIENTS
    )
    app = create_app(settings)
    images = [image_bytes(seed=seed) for seed in range(CLIENTS)]
    with TestClient(app) as client:
        assert wait_until_settled(client) == 200

        def post(data: bytes) -> tuple[int, dict]:
            response = client.post("/predict", files={"file": ("a.png", data, "image/png")})
            return response.status_code, response.json()

        with ThreadPoolExecutor(CLIENTS) as pool:
            results = list(pool.map(post, images))
        assert client.get("/health").status_code == 200
        metrics = client.get("/metrics").text
    assert [status for status, _ in results] == [200] * CLIENTS
    assert all(len(body["faces"]) == 1 for _, body in results)
    batches = _metric(metrics, "age_model_batch_size_count")
    assert _metric(metrics, "age_model_batch_size_sum") == CLIENTS
    assert batches < CLIENTS, "some model call must have carried faces of several requests"
    assert _metric(metrics, 'age_model_batch_size_bucket{le="1.0"}') < batches, "a batch larger than 1"
    assert f'age_http_requests_total{{method="POST",route="/predict",status="200"}} {CLIENTS}.0' in metrics
