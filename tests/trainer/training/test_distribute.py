"""Scale-out: two age-train workers on 127.0.0.1, each with its own TF_CONFIG, train one model together
(``trainer.training.multiworker``'s loop: Keras 3.15's ``fit`` cannot, keras-team/keras#20585)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from core.artifact import read_metadata
from tests.synthetic import synthetic_faces
from tests.trainer.training.test_train import REPO, write_config


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


@pytest.mark.slow
def test_two_workers_train_one_model_and_only_the_chief_writes_it(tmp_path: Path) -> None:
    synthetic_faces(tmp_path / "data", n=24)
    # logs and checkpoints on: the TensorBoard writer is what used to touch TensorFlow before the strategy.
    config = write_config(tmp_path, num_epochs=1, augment=False)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    workers = []
    for index in range(2):
        env = os.environ | {
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "PYTHONPATH": str(REPO),
        }
        # Each worker keeps its own run folder, as on separate machines; the model goes to the shared output_dir.
        command = [
            sys.executable,
            "-m",
            "trainer.cli.train",
            "--config",
            str(config),
            "--set",
            f"run_dir=runs/w{index}",
        ]
        workers.append(
            subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        )
    outputs = []
    try:
        for worker in workers:
            outputs.append(worker.communicate(timeout=400))
    finally:
        for worker in workers:
            worker.kill()
    for out, err in outputs:
        assert "Collective ops must be configured" not in err
        assert "replicas: 2" in out, err[-3000:]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err[-3000:]
    chief_out, other_out = outputs[0][0], outputs[1][0]
    saved = [Path(line.removeprefix("saved: ")) for line in chief_out.splitlines() if line.startswith("saved: ")]
    assert other_out.strip().splitlines()[-1] == "saved: (written by the chief worker)"
    assert list((tmp_path / "models").glob("*.h5")) == saved
    assert read_metadata(saved[0])["img_size"] == 32
    assert not (tmp_path / "runs" / "w1" / "metrics.json").exists(), "only the chief evaluates"
    assert not (tmp_path / "runs" / "w1" / "history.csv").exists(), "only the chief writes the run's files"
    assert not (tmp_path / "runs" / "w1" / "checkpoints").exists()
    history = pd.read_csv(tmp_path / "runs" / "w0" / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "mae", "rmse", "val_loss", "val_mae", "val_rmse"]
    assert list(history["epoch"]) == [0]
    assert (tmp_path / "runs" / "w0" / "checkpoints" / "best.weights.h5").is_file()
    # Validation sums are reduced across the workers: both print the same figures, over the whole split, and
    # the saved model (best epoch's weights) scores that same MAE when the chief evaluates it alone.
    epoch_lines = [[line for line in out.splitlines() if line.startswith("Epoch 1/1")] for out, _ in outputs]
    assert epoch_lines[0], outputs[0][0]
    assert epoch_lines[0][0].split(" - ")[2:] == epoch_lines[1][0].split(" - ")[2:]
    metrics = json.loads((tmp_path / "runs" / "w0" / "metrics.json").read_text())
    assert metrics["val"]["mae"] == pytest.approx(history["val_mae"].min(), abs=1e-3)


def test_resume_is_refused_with_several_workers_before_waiting_for_them(tmp_path: Path) -> None:
    synthetic_faces(tmp_path / "data", n=8)
    config = write_config(tmp_path, resume=True)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    env = os.environ | {
        "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 1}}),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONPATH": str(REPO),
    }
    command = [sys.executable, "-m", "trainer.cli.train", "--config", str(config)]
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "resume: not supported with several workers" in done.stderr


def test_no_trainer_module_starts_tensorflow_at_import() -> None:
    # A tensor made at import starts TensorFlow's context, after which MultiWorkerMirroredStrategy cannot be built
    # ("Collective ops must be configured at program startup"): age-train must build it first.
    script = (
        "import importlib, pkgutil, trainer\n"
        "for module in pkgutil.walk_packages(trainer.__path__, 'trainer.'):\n"
        "    importlib.import_module(module.name)\n"
        "from tensorflow.python.eager import context\n"
        "print(context.context()._context_handle is None)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "True"
