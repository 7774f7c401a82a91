"""age-train: the weighted loss and metrics on a batch, the CLI end to end, resume, scale-out and real learning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.artifact import REQUIRED_KEYS, read_metadata
from core.coral import coral_loss, importance_weights
from tests.synthetic import synthetic_faces
from trainer.cli.train import main
from trainer.data.dataset import load_table
from trainer.evaluation.metrics import AgeMAE, AgeRMSE
from trainer.model.build import build_model
from trainer.training.config import load_config
from trainer.training.fit import init_coral_biases
from trainer.training.job import train

REPO = Path(__file__).resolve().parents[3]
UTKFACE = REPO.parent / "shared" / "data" / "utkface"


def write_config(folder: Path, **changes: object) -> Path:
    config = {
        "img_dir": "data",
        "csv_path": "data/labels.csv",
        "img_size": 32,
        "batch_size": 8,
        "num_epochs": 1,
        "arch_type": "resnet",
        "arch_subtype": 18,
        "width": 8,
        "val_fraction": 0.25,
        "test_fraction": 0.25,
        "output_dir": "models",
        "run_dir": "runs/{model_prefix}{arch_type}{arch_subtype}_{timestamp}",
    } | changes
    path = folder / "train.json"
    path.write_text(json.dumps(config))
    return path


def test_weighted_coral_loss_on_a_batch_matches_the_paper() -> None:
    labels = np.array([0, 1, 3, 3, 2])
    logits = np.array([[-1.0, 0.5, 2.0], [3.0, -2.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.0, -4.0], [2.0, 1.0, -1.0]])
    weights = importance_weights(labels, 4)
    levels = (labels[:, None] > np.arange(3)).astype(float)
    log_p = -np.log1p(np.exp(-logits))
    log_q = -np.log1p(np.exp(logits))
    expected = np.mean(-np.sum(weights * (levels * log_p + (1 - levels) * log_q), axis=1))
    weighted = float(coral_loss(weights)(labels, logits.astype("float32")))
    assert weighted == pytest.approx(expected, rel=1e-5)
    assert weighted != pytest.approx(float(coral_loss()(labels, logits.astype("float32"))), rel=1e-3)


def test_metrics_decode_logits_to_years() -> None:
    logits = np.array([[5.0, 5.0, -5.0], [-5.0, -5.0, -5.0], [5.0, 5.0, 5.0]], dtype="float32")
    truth = np.array([2, 3, 0])
    mae, rmse = AgeMAE(), AgeRMSE()
    mae.update_state(truth, logits)
    rmse.update_state(truth, logits)
    assert float(mae.result()) == pytest.approx((0 + 3 + 3) / 3)
    assert float(rmse.result()) == pytest.approx(np.sqrt((0 + 9 + 9) / 3))


def test_coral_biases_start_at_the_label_prior() -> None:
    model = build_model("resnet", 18, 32, 5, width=8)
    labels = np.array([0, 1, 1, 2, 2, 2, 3, 4])
    init_coral_biases(model, labels, 5)
    biases = keras.ops.convert_to_numpy(model.get_layer("coral").coral_bias)
    share = np.array([7, 5, 2, 1]) / 8
    np.testing.assert_allclose(biases, np.log(share / (1 - share)), rtol=1e-5)
    assert np.all(np.diff(biases) <= 0), "rank-consistent from the start"


def test_bad_config_exits_2_with_one_line_naming_key_and_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    synthetic_faces(tmp_path / "data", n=4)
    config = write_config(tmp_path, batch_sise=8)
    assert main(["--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "batch_sise" in err
    assert str(config) in err
    (tmp_path / "data" / "labels.csv").write_text("ID,Path,Years\n")
    assert main(["--config", str(write_config(tmp_path))]) == 2
    assert "'Age'" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_trains_and_saves_a_self_describing_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    synthetic_faces(tmp_path / "data")
    config = write_config(tmp_path, model_prefix="t_")
    assert main(["--config", str(config), "--set", "num_epochs=2", "--set", "augment=false"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("saved: ")
    saved = Path(last.removeprefix("saved: "))
    assert saved.parent == tmp_path / "models"
    assert saved.name.startswith("t_resnet18_")
    meta = read_metadata(saved)
    assert set(REQUIRED_KEYS) <= set(meta)
    assert meta["num_classes"] == meta["end_label"] - meta["start_label"] + 1
    assert {"mae", "rmse", "cs5"} <= set(meta["test_metrics"])
    run_dir = Path(meta["run_dir"])
    splits = [set(pd.read_csv(run_dir / f"{name}.csv", dtype={"ID": str})["ID"]) for name in ("train", "val", "test")]
    assert sum(map(len, splits)) == len(set.union(*splits)), "no ID in two splits"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2
    assert set(metrics["intervals"]["calibrated"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert meta["calibration"]["n"] == len(pd.read_csv(run_dir / "val.csv"))
    assert metrics["test"]["mae"] == meta["test_metrics"]["mae"]
    for name in ("learning_curves.png", "mae_per_age.png", "predicted_vs_true.png", "config.json"):
        assert (run_dir / name).is_file()
    assert list((run_dir / "logs").rglob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "best.weights.h5").is_file()


class Interrupt(keras.callbacks.Callback):
    """Stands in for a kill right after the first epoch's checkpoint was written."""

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        raise KeyboardInterrupt


class CountEpochs(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.epochs: list[int] = []

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epochs.append(epoch)


@pytest.mark.slow
def test_resume_continues_after_an_interruption_and_ends_at_the_same_epoch(tmp_path: Path) -> None:
    synthetic_faces(tmp_path / "data")
    path = write_config(tmp_path, num_epochs=2, logs=False, run_dir="runs/fixed")
    config = load_config(path)
    table, summary = load_table(config.csv_path, config.img_dir)
    with pytest.raises(KeyboardInterrupt):
        train(config, table, summary, [Interrupt()])
    assert not list((tmp_path / "models").glob("*.h5"))
    counter = CountEpochs()
    saved = train(load_config(path, {"resume": True}), table, summary, [counter])
    assert counter.epochs == [1], "only the second epoch is left to run"
    history = pd.read_csv(tmp_path / "runs" / "fixed" / "history.csv")
    assert list(history["epoch"]) == [0, 1]
    assert saved is not None
    assert saved.is_file()


@pytest.mark.slow
def test_mirrored_strategy_trains_and_saves_on_two_logical_cpus(tmp_path: Path) -> None:
    synthetic_faces(tmp_path / "data", n=24)
    config = write_config(tmp_path, distribute="mirrored", logs=False, checkpoint=False)
    script = (
        "import sys, tensorflow as tf\n"
        "cpu = tf.config.list_physical_devices('CPU')[0]\n"
        "tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)\n"
        "from trainer.cli.train import main\n"
        f"sys.exit(main(['--config', {str(config)!r}]))\n"
    )
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "replicas: 2" in run.stdout
    saved = Path(run.stdout.strip().splitlines()[-1].removeprefix("saved: "))
    assert read_metadata(saved)["img_size"] == 32


@pytest.mark.slow
@pytest.mark.skipif(not UTKFACE.is_dir(), reason="needs ../shared/data/utkface (UTKFace chips)")
def test_learns_real_faces_better_than_the_median(tmp_path: Path) -> None:
    labels = pd.read_csv(UTKFACE / "labels.csv", dtype={"ID": str}).sample(300, random_state=0)
    (tmp_path / "data" / "images").mkdir(parents=True)
    for path in labels["Path"]:
        with Image.open(UTKFACE / path) as image:
            image.convert("RGB").resize((48, 48), Image.BILINEAR).save(tmp_path / "data" / path)
    labels[["ID", "Path", "Age"]].to_csv(tmp_path / "data" / "labels.csv", index=False)
    config = write_config(
        tmp_path,
        img_size=48,
        width=16,
        batch_size=16,
        num_epochs=10,
        learning_rate=0.003,
        val_fraction=0.2,
        test_fraction=0.1,
        logs=False,
        checkpoint=False,
    )
    assert main(["--config", str(config)]) == 0
    run_dir = next((tmp_path / "runs").iterdir())
    val = json.loads((run_dir / "metrics.json").read_text())["val"]
    assert val["mae"] < val["median_baseline_mae"]
