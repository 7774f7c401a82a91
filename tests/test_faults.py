"""Faults: corrupt model files, kills mid-run and clients that vanish mid-upload lose nothing and break nothing.

Each test drives the real console scripts in subprocesses (``age-serve``, ``age-demo``, ``age-train``) with a tiny
model or data set, so a kill is a real ``SIGKILL``. The kill and resume of ``age-align`` is tested next to its
other tests (``tests/trainer/data/test_align.py``).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import pytest

from core.artifact import REQUIRED_KEYS, read_metadata
from service.schemas import PredictResponse
from tests.service.conftest import build_tiny_model_file, write_predict_config
from tests.synthetic import synthetic_faces

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FIXTURES = ROOT / "tests" / "fixtures"
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}

pytestmark = pytest.mark.slow


def script(name: str) -> str:
    """The installed console script ``name`` next to this interpreter."""
    path = BIN / name
    if not path.is_file():
        pytest.skip(f"{name} is not installed in {BIN}; run `make setup`")
    return str(path)


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 120.0, every_s: float = 0.02) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny CORAL model and a predict config that matches it."""
    folder = tmp_path_factory.mktemp("faults-model")
    model = build_tiny_model_file(folder / "tiny.h5")
    return model, write_predict_config(folder / "predict_config.json", model)


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99], ids=["empty", "10%", "50%", "99%"])
def test_age_serve_refuses_a_truncated_model_with_one_line(
    tmp_path: Path, tiny_model: tuple[Path, Path], keep: float
) -> None:
    model, config = tiny_model
    data = model.read_bytes()
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(data[: int(len(data) * keep)])
    result = subprocess.run(
        [script("age-serve"), "--model", str(truncated), "--config", str(config), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("age-serve:")
    assert "cut.h5" in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


def test_age_demo_killed_mid_run_leaves_only_whole_files_and_reruns(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> None:
    model, config = tiny_model
    photos = tmp_path / "photos"
    photos.mkdir()
    sources = sorted(FIXTURES.glob("*.*"))
    for copy in range(30):
        for source in sources:
            (photos / f"{copy:03d}_{source.name}").symlink_to(source)
    out = tmp_path / "out"
    command = [script("age-demo"), "-p", str(photos), "--out", str(out), "--config", str(config)]
    command += ["--model", str(model), "--batch-size", "2"]

    demo = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)
    try:
        wait_for(lambda: len(list(out.glob("*.json"))) >= 6 or demo.poll() is not None, "age-demo's first files")
        demo.send_signal(signal.SIGKILL)
    finally:
        demo.wait(timeout=60)
    assert demo.returncode == -signal.SIGKILL, "age-demo finished before it could be killed"
    written = list(out.glob("*.json"))
    assert 6 <= len(written) < len(list(photos.iterdir()))
    for path in written:
        PredictResponse.model_validate_json(path.read_text())
    leftovers = [path for path in out.iterdir() if path.suffix != ".json"]
    assert all(path.name.startswith(".") and path.suffix == ".tmp" for path in leftovers), leftovers

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV)
    assert rerun.returncode == 0, rerun.stderr
    finished = sorted(out.glob("*.json"))
    assert [path.name for path in finished] == sorted(f"{path.name}.json" for path in photos.iterdir())
    for path in finished:
        assert PredictResponse.model_validate_json(path.read_text()).faces


def test_age_train_killed_mid_epoch_resumes_to_the_configured_epochs(tmp_path: Path) -> None:
    epochs = 3
    csv = synthetic_faces(tmp_path / "data", n=240, size=48, seed=3)
    config = {
        "img_dir": str(csv.parent),
        "csv_path": str(csv),
        "img_size": 48,
        "batch_size": 8,
        "num_epochs": epochs,
        "arch_type": "resnet",
        "arch_subtype": 18,
        "width": 8,
        "val_fraction": 0.2,
        "test_fraction": 0.2,
        "augment": False,
        "logs": False,
        "resume": True,
        "output_dir": str(tmp_path / "models"),
        "run_dir": str(tmp_path / "runs" / "fixed"),
    }
    path = tmp_path / "train.json"
    path.write_text(json.dumps(config))
    command = [script("age-train"), "--config", str(path)]
    run_dir = tmp_path / "runs" / "fixed"
    progress = run_dir / "checkpoints" / "training_metadata.json"
    history = run_dir / "history.csv"

    def first_epoch_done() -> bool:
        # The epoch's checkpoint and its history row are both written at the epoch's end.
        return progress.is_file() and history.is_file() and len(history.read_text().splitlines()) >= 2

    trainer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV, cwd=tmp_path)
    try:
        wait_for(lambda: first_epoch_done() or trainer.poll() is not None, "the first epoch's checkpoint")
        trainer.send_signal(signal.SIGKILL)
    finally:
        trainer.wait(timeout=60)
    assert trainer.returncode == -signal.SIGKILL, "age-train finished before it could be killed"
    assert json.loads(progress.read_text())["epoch"] < epochs
    assert not list((tmp_path / "models").glob("*.h5"))

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300, env=ENV, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    saved = Path(resumed.stdout.strip().splitlines()[-1].removeprefix("saved: "))
    meta = read_metadata(saved)
    assert set(REQUIRED_KEYS) <= set(meta)
    assert meta["run_dir"] == "runs/fixed", "named relative to the folder age-train ran in"
    assert list(pd.read_csv(history)["epoch"]) == list(range(epochs))
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == epochs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def live_server(
    tmp_path: Path, tiny_model: tuple[Path, Path]
) -> Iterator[tuple[str, int, subprocess.Popen[bytes], Path]]:
    """A real ``age-serve`` (uvicorn) on a free localhost port, healthy; yields URL, port, process and its log."""
    model, config = tiny_model
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [script("age-serve"), "--model", str(model), "--config", str(config), "--port", str(port)]
    log = tmp_path / "age-serve.log"
    with log.open("wb") as sink:
        server = subprocess.Popen([*command, "--log-level", "warning"], stdout=sink, stderr=sink, env=ENV)

    def healthy() -> bool:
        if server.poll() is not None:
            raise AssertionError(f"age-serve exited with {server.returncode}")
        try:
            return httpx.get(f"{url}/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        wait_for(healthy, "age-serve to become healthy", every_s=0.1)
        yield url, port, server, log
    finally:
        server.terminate()
        server.wait(timeout=60)


def _abandon_upload(port: int, photo: bytes, how: str) -> None:
    """Open a raw connection, send part of a multipart upload of ``photo``, then close or reset it."""
    boundary = "vanishing"
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.png"\r\n\r\n'.encode()
    body = head + photo + f"\r\n--{boundary}--\r\n".encode()
    request = (
        f"POST /predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        if how == "headers-only":
            sock.sendall(request)
        elif how == "reset":
            sock.sendall(request + body[: len(body) // 3])
            # SO_LINGER 0: close() sends a TCP reset instead of a clean FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        else:
            sock.sendall(request + body[: len(body) // 2])
            time.sleep(0.05)


def test_service_keeps_answering_while_clients_vanish_mid_upload(
    live_server: tuple[str, int, subprocess.Popen[bytes], Path],
) -> None:
    url, port, server, log = live_server
    photo = (FIXTURES / "2008_001009.jpg").read_bytes()
    stop = threading.Event()
    vanishers = 4
    abandoned = [0] * vanishers  # one count per thread: no two threads write the same number

    def vanish(worker: int) -> None:
        kinds = ("half-body", "reset", "headers-only")
        while not stop.is_set():
            _abandon_upload(port, photo, kinds[(abandoned[worker] + worker) % len(kinds)])
            abandoned[worker] += 1

    def ask(_: int) -> int:
        response = httpx.post(f"{url}/predict", files={"file": ("a.jpg", photo, "image/jpeg")}, timeout=60)
        return response.status_code

    with ThreadPoolExecutor(8) as pool:
        vanishing = [pool.submit(vanish, worker) for worker in range(vanishers)]
        statuses = list(pool.map(ask, range(40)))
        stop.set()
        for future in vanishing:
            future.result()
    assert statuses == [200] * 40
    assert sum(abandoned) >= 20
    assert all(abandoned), "every vanishing client ran while the others were answered"
    assert httpx.get(f"{url}/health", timeout=5).status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'status="500"' not in metrics, "a vanished client is not a server error"
    assert server.poll() is None
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
