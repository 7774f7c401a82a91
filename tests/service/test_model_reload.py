"""MODEL_REPOSITORY and hot reload: the highest version serves, a newer one is swapped in on request (SIGHUP's
path) or by polling, requests in flight finish on their model, 4 clients posting throughout see no failure, and a
broken version changes nothing."""

from __future__ import annotations

import base64
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.main import create_app
from service.settings import ServiceSettings
from tests.service.conftest import ROOT, FakeAligner, build_tiny_model_file, image_bytes, wait_until_settled

PHOTO = image_bytes(seed=3)


@pytest.fixture(scope="module")
def model_v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Same metadata as the session's tiny model, other weights: its answers differ."""
    return build_tiny_model_file(tmp_path_factory.mktemp("v2") / "model.h5", seed=1)


def add_version(repository: Path, version: int, source: Path | bytes) -> Path:
    """Drop ``source`` in as ``repository/<version>/model.h5`` the way the docs say: a folder renamed into place."""
    staging = repository / f".{version}.tmp"
    staging.mkdir()
    target = staging / "model.h5"
    if isinstance(source, bytes):
        target.write_bytes(source)
    else:
        shutil.copyfile(source, target)
    staging.rename(repository / str(version))
    return repository / str(version) / "model.h5"


class GateAligner(FakeAligner):
    """One fake face; while ``closed``, each call waits for ``opened`` and says it is waiting through ``entered``."""

    def __init__(self) -> None:
        super().__init__(n_faces=1)
        self.closed = False
        self.entered = threading.Event()
        self.opened = threading.Event()

    def align(self, rgb: np.ndarray) -> list:
        if self.closed:
            self.entered.set()
            assert self.opened.wait(timeout=60)
        return super().align(rgb)


@pytest.fixture
def repository(tmp_path: Path, model_file: Path) -> Path:
    folder = tmp_path / "age"
    folder.mkdir()
    add_version(folder, 1, model_file)
    return folder


@pytest.fixture
def serve(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., tuple[TestClient, GateAligner]]]:
    """Start a ready app on the given settings with a ``GateAligner`` (no dlib)."""
    import service.main

    aligner = GateAligner()
    monkeypatch.setattr(service.main, "aligner_from_metadata", lambda metadata, max_faces=None: aligner)
    clients: list[TestClient] = []

    def start(**settings: object) -> tuple[TestClient, GateAligner]:
        merged = {"predict_config": config_file, "detect_workers": 4, "batch_max_wait_ms": 2, **settings}
        client = TestClient(create_app(ServiceSettings(**merged)))  # type: ignore[arg-type]
        client.__enter__()
        clients.append(client)
        assert wait_until_settled(client) == 200, client.app.state.runtime.error  # type: ignore[attr-defined]
        return client, aligner

    yield start
    aligner.opened.set()
    for client in clients:
        client.__exit__(None, None, None)


def reload(client: TestClient) -> str | None:
    """One reload pass, as SIGHUP starts it, run in the app's event loop; the new model's id or None."""
    reloader = client.app.state.runtime.reloader  # type: ignore[attr-defined]
    return client.portal.call(reloader.reload)  # type: ignore[union-attr]


def logits(client: TestClient) -> list[float]:
    return answer(client)[1]


def answer(client: TestClient) -> tuple[str, list[float]]:
    """The model id (body and header, which must agree) and the logits of one ``/predict`` of ``PHOTO``."""
    response = client.post("/predict", files={"file": ("a.png", PHOTO, "image/png")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert response.headers["X-Model-Id"] == body["model_id"]
    return body["model_id"], body["raw_logits"]


def test_the_highest_version_serves_and_a_reload_swaps_in_a_newer_one(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    add_version(repository, 0, model_v2)
    (repository / "notes").mkdir()
    client, _ = serve(model_repository=repository)
    first = client.get("/model").json()
    assert first["id"].startswith("age:1@sha256:")
    assert (first["name"], first["version"]) == ("age", 1)
    before = logits(client)

    add_version(repository, 2, model_v2)
    assert client.get("/model").json()["id"] == first["id"], "nothing changes before the reload"
    new_id = reload(client)
    assert new_id is not None
    assert new_id.startswith("age:2@sha256:")
    assert client.get("/model").json()["id"] == new_id
    assert client.get("/health").json()["model"]["id"] == new_id
    after = logits(client)
    assert not np.allclose(before, after), "the answers come from version 2's weights"
    metrics = client.get("/metrics").text
    assert f'age_model_info{{model_id="{new_id}"}} 1.0' in metrics
    assert 'age_model_reloads_total{outcome="swapped"} 1.0' in metrics
    assert reload(client) is None, "nothing newer: no second load"


def test_a_request_in_flight_finishes_on_the_model_it_started_with(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    client, aligner = serve(model_repository=repository)
    on_v1 = logits(client)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    old = runtime.served
    aligner.closed = True
    v1 = client.get("/model").json()["id"]
    held: list[tuple[str, list[float]]] = []
    request = threading.Thread(target=lambda: held.append(answer(client)))
    request.start()
    assert aligner.entered.wait(timeout=30)

    add_version(repository, 2, model_v2)
    assert reload(client) is not None
    assert old.batcher.alive, "the replaced model keeps running while a request holds it"
    aligner.closed = False
    aligner.opened.set()
    request.join(timeout=30)
    assert held
    assert held[0][0] == v1
    assert np.allclose(held[0][1], on_v1)
    assert not np.allclose(logits(client), on_v1)
    deadline = time.monotonic() + 30
    while old.batcher.alive and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not old.batcher.alive, "the replaced model's batcher stops once nobody holds it"


def test_four_clients_posting_throughout_a_reload_see_no_failure(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    client, _ = serve(model_repository=repository)
    v1, on_v1 = answer(client)
    add_version(repository, 2, model_v2)
    swapped = threading.Event()
    answers: list[tuple[float, str, list[float]]] = []
    failures: list[str] = []

    def post_until_well_after_the_swap() -> None:
        after_swap = 0
        while after_swap < 5:
            response = client.post("/predict", files={"file": ("a.png", PHOTO, "image/png")})
            if response.status_code != 200:
                failures.append(f"{response.status_code} {response.text}")
                return
            body = response.json()
            answers.append((time.monotonic(), body["model_id"], body["raw_logits"]))
            after_swap += swapped.is_set()

    posters = [threading.Thread(target=post_until_well_after_the_swap) for _ in range(4)]
    for poster in posters:
        poster.start()
    while len(answers) < 8 and not failures:
        time.sleep(0.01)
    v2 = reload(client)
    swapped_at = time.monotonic()
    swapped.set()
    for poster in posters:
        poster.join(timeout=120)
    assert failures == []
    assert v2 is not None
    on = {v1: on_v1, v2: logits(client)}
    # Every answer came wholly from the model it names: never one model's logits under the other's id.
    assert all(np.allclose(row, on[model_id]) for _, model_id, row in answers)
    assert any(model_id == v1 for at, model_id, _ in answers if at < swapped_at)
    assert sum(model_id == v2 for _, model_id, _ in answers) >= 4 * 5 - 4


def test_a_broken_version_is_skipped_and_the_next_newest_is_tried(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path, model_file: Path
) -> None:
    client, _ = serve(model_repository=repository)
    v1 = client.get("/model").json()["id"]
    add_version(repository, 3, model_file.read_bytes()[:2000])
    assert reload(client) is None
    assert client.get("/model").json()["id"] == v1
    assert client.get("/health/ready").status_code == 200
    (skipped,) = client.get("/model").json()["repository"]["skipped"]
    assert skipped["version"] == 3
    assert 'age_model_reloads_total{outcome="failed"} 1.0' in client.get("/metrics").text
    assert "model.h5" in skipped["reason"]

    add_version(repository, 2, model_v2)
    new_id = reload(client)
    assert new_id is not None
    assert new_id.startswith("age:2@")
    assert client.get("/model").json()["id"] == new_id


def test_a_version_that_cuts_chips_differently_is_skipped(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, tmp_path: Path
) -> None:
    client, _ = serve(model_repository=repository)
    add_version(repository, 2, build_tiny_model_file(tmp_path / "padded.h5", chip_padding=0.4))
    assert reload(client) is None
    (skipped,) = client.get("/model").json()["repository"]["skipped"]
    assert "cuts face chips differently" in skipped["reason"]


def test_removing_the_served_version_rolls_back_to_the_one_below(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    add_version(repository, 2, model_v2)
    client, _ = serve(model_repository=repository)
    assert client.get("/model").json()["version"] == 2
    shutil.rmtree(repository / "2")
    new_id = reload(client)
    assert new_id is not None
    assert new_id.startswith("age:1@")


def test_model_poll_seconds_picks_up_a_new_version_unasked(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    client, _ = serve(model_repository=repository, model_poll_seconds=0.1)
    add_version(repository, 2, model_v2)
    deadline = time.monotonic() + 60
    while client.get("/model").json()["version"] != 2:
        assert time.monotonic() < deadline, "version 2 was not picked up within 60 s"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_sighup_to_age_serve_swaps_in_version_2_while_four_clients_post(
    tmp_path: Path, repository: Path, model_v2: Path, config_file: Path
) -> None:
    """The issue's target, end to end: a real process, a real SIGHUP, 4 clients posting throughout, 0 failures."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODEL_REPOSITORY": str(repository), "PREDICT_CONFIG": str(config_file), "DETECT_WORKERS": "2"}
    env.pop("MODEL_PATH", None)
    log = (tmp_path / "serve.log").open("w")
    command = [sys.executable, "-m", "service.main", "--port", str(port), "--log-level", "warning"]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    chip = image_bytes(width=64, height=64, seed=9)
    stop = threading.Event()
    ok: list[str] = []
    failures: list[str] = []

    def post_throughout() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                response = http.post("/predict?aligned=true", files={"file": ("c.png", chip, "image/png")})
                (ok if response.status_code == 200 else failures).append(f"{response.status_code} {response.text}")

    try:
        deadline = time.monotonic() + 180
        while not _answers(f"{url}/health"):
            assert server.poll() is None, (tmp_path / "serve.log").read_text()
            assert time.monotonic() < deadline, "age-serve did not become healthy within 180 s"
            time.sleep(0.2)
        posters = [threading.Thread(target=post_throughout) for _ in range(4)]
        for poster in posters:
            poster.start()
        add_version(repository, 2, model_v2)
        server.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while httpx.get(f"{url}/model", timeout=10).json()["version"] != 2:
            assert time.monotonic() < deadline, "version 2 did not serve within 60 s of SIGHUP"
            time.sleep(0.1)
        swapped = len(ok)
        while len(ok) < swapped + 8 and not failures:
            time.sleep(0.05)
        stop.set()
        for poster in posters:
            poster.join(timeout=60)
        assert server.poll() is None, "SIGHUP must not end the process"
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=60)
        log.close()
    assert failures == []
    assert len(ok) >= 8


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False


def test_the_issue_target_with_a_repository_and_api_keys(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path
) -> None:
    """Keys required (either header), probes open, and one id everywhere: header, body, /model, /health, OIP."""
    client, _ = serve(model_repository=repository, api_keys="key-one,key-two", cors_origins="https://app.example")
    for probe in ("/health/live", "/health/ready", "/v2/health/live", "/v2/health/ready"):
        assert client.get(probe).status_code == 200, probe
    photo = {"file": ("a.png", PHOTO, "image/png")}
    assert client.post("/predict", files=photo).status_code == 401
    assert client.post("/v2/models/age/infer", json={}).status_code == 401
    by_bearer = client.post("/predict", files=photo, headers={"Authorization": "Bearer key-one"})
    by_header = client.post("/predict", files=photo, headers={"X-API-Key": "key-two"})
    assert (by_bearer.status_code, by_header.status_code) == (200, 200)
    model = client.get("/model", headers={"X-API-Key": "key-one"}).json()
    assert model["id"].startswith("age:1@sha256:")
    assert by_bearer.headers["X-Model-Id"] == by_bearer.json()["model_id"] == model["id"]
    assert client.get("/health").json()["model"]["id"] == model["id"]
    oip = {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(PHOTO).decode()]}]}
    inferred = client.post("/v2/models/age/infer", json=oip, headers={"Authorization": "Bearer key-two"})
    assert inferred.status_code == 200, inferred.text
    assert inferred.headers["X-Model-Id"] == inferred.json()["parameters"]["model_id"] == model["id"]


def test_a_replaced_model_is_released(
    serve: Callable[..., tuple[TestClient, GateAligner]], repository: Path, model_v2: Path
) -> None:
    """Nothing keeps the old weights alive after a swap: a pod reloading for weeks does not grow by a model each."""
    client, _ = serve(model_repository=repository)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    old = weakref.ref(runtime.predictor)
    add_version(repository, 2, model_v2)
    assert reload(client) is not None
    logits(client)
    deadline = time.monotonic() + 30
    while old() is not None:
        assert time.monotonic() < deadline, "the replaced predictor is still referenced"
        gc.collect()
        time.sleep(0.05)
