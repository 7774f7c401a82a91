"""Fine-tuning keys: pretrained weights, a head-only warm start, a smaller backbone learning rate, and their checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from core.coral import coral_loss
from core.errors import ConfigError
from trainer.model.build import build_model
from trainer.model.optimiser import BackboneScaledAdamW, freeze_callbacks, make_optimizer
from trainer.training.config import load_config

REPO = Path(__file__).resolve().parents[3]


def _config(tmp_path: Path, **changes: object) -> Path:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    (data / "labels.csv").write_text("ID,Path,Age\n")
    raw = {"img_dir": "data", "csv_path": "data/labels.csv", "img_size": 32, "num_epochs": 3} | changes
    path = tmp_path / "train.json"
    path.write_text(json.dumps(raw))
    return path


def _fit(optimizer: keras.optimizers.Optimizer, callbacks: list, epochs: int) -> tuple[keras.Model, list, list]:
    keras.utils.set_random_seed(0)
    model = build_model("resnet", 18, 32, 5, width=8)
    model.compile(optimizer=optimizer, loss=coral_loss(None))
    before = [w.copy() for w in model.get_weights()]
    x = np.random.default_rng(0).uniform(0, 255, (16, 32, 32, 3)).astype("float32")
    y = np.arange(16, dtype="int32") % 5
    history = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            history.append([w.copy() for w in self.model.get_weights()])

    model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[*callbacks, Snapshot()])
    return model, before, history


def _trainable_pairs(model: keras.Model, a: list, b: list, head: bool) -> list[tuple[np.ndarray, np.ndarray]]:
    """Two snapshots of the trainable weights of the head (``head``) or of the backbone, side by side; batch-norm
    statistics are left out, since they move in any forward pass."""
    trainable = {v.path for v in model.trainable_weights}
    names = [v.path for v in model.weights]
    return [(x, y) for n, x, y in zip(names, a, b, strict=True) if n in trainable and n.startswith("coral") == head]


def test_frozen_epochs_train_the_head_only_then_the_backbone(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, learning_rate=0.01, backbone_learning_rate=0.001))
    # A pretrained backbone is what freezing is for; the test's tiny ResNet-18 stands in for one.
    config = config.model_copy(update={"freeze_backbone_epochs": 1})
    optimizer = make_optimizer(config, steps_per_epoch=2)
    assert isinstance(optimizer, BackboneScaledAdamW)
    model, before, history = _fit(optimizer, freeze_callbacks(config), epochs=2)
    assert any(not np.allclose(x, y) for x, y in _trainable_pairs(model, before, history[0], head=True))
    assert all(np.allclose(x, y) for x, y in _trainable_pairs(model, before, history[0], head=False))
    assert any(not np.allclose(x, y) for x, y in _trainable_pairs(model, history[0], history[1], head=False))
    assert float(model.optimizer.backbone_multiplier.numpy()) == pytest.approx(0.1)


def test_backbone_steps_are_scaled_by_the_learning_rate_ratio() -> None:
    steps = {}
    for multiplier in (1.0, 0.01):
        optimizer = BackboneScaledAdamW(backbone_multiplier=multiplier, learning_rate=0.01, weight_decay=0.0)
        model, before, history = _fit(optimizer, [], epochs=1)
        names = [v.path for v in model.weights]
        index = names.index("stem_conv/kernel")
        steps[multiplier] = float(np.abs(history[0][index] - before[index]).max())
    assert steps[0.01] < steps[1.0] * 0.05


def test_face_resnet_defaults_to_dlib_weights_and_refuses_impossible_pretrained(tmp_path: Path) -> None:
    config = load_config(_config(tmp_path, arch_type="face_resnet", arch_subtype=29, img_size=150))
    assert config.pretrained == "dlib"
    assert (
        load_config(
            _config(tmp_path, arch_type="face_resnet", arch_subtype=29, img_size=150, pretrained=None)
        ).pretrained
        is None
    )
    with pytest.raises(ConfigError, match="pretrained: 'dlib'"):
        load_config(_config(tmp_path, arch_type="resnet", arch_subtype=18, pretrained="dlib"))
    with pytest.raises(ConfigError, match=r"pretrained: keras\.applications has no ImageNet weights for resnet18"):
        load_config(_config(tmp_path, arch_type="resnet", arch_subtype=18, pretrained="imagenet"))
    with pytest.raises(ConfigError, match="pretrained: weights file not found"):
        load_config(_config(tmp_path, pretrained="missing.weights.h5"))
    with pytest.raises(ConfigError, match="freeze_backbone_epochs"):
        load_config(_config(tmp_path, freeze_backbone_epochs=1))


def test_chips_cut_at_another_size_than_img_size_are_refused(tmp_path: Path) -> None:
    path = _config(tmp_path, img_size=64)
    (tmp_path / "data" / "align.json").write_text(json.dumps({"img_size": 80, "padding": 0.25}))
    with pytest.raises(ConfigError, match=r"img_size: 64, but age-align cut the chips .* at 80 px"):
        load_config(path)
    (tmp_path / "data" / "align.json").write_text(json.dumps({"img_size": 64, "padding": 0.25}))
    assert load_config(path).img_size == 64


def test_whole_model_weights_file_continues_training_from_it(tmp_path: Path) -> None:
    first = build_model("resnet", 18, 32, 5, width=8)
    weights = tmp_path / "best.weights.h5"
    first.save_weights(str(weights))
    second = build_model("resnet", 18, 32, 5, width=8, pretrained=str(weights))
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_imagenet_offline_stops_in_one_line_with_exit_2(tmp_path: Path) -> None:
    path = _config(tmp_path, arch_type="resnet", arch_subtype=50, pretrained="imagenet")
    env = os.environ | {
        "KERAS_HOME": str(tmp_path / "keras"),  # an empty cache: Keras must try to download
        "HTTPS_PROXY": "http://127.0.0.1:9",  # and cannot reach anything, whatever the machine's network
        "HTTP_PROXY": "http://127.0.0.1:9",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    result = subprocess.run(
        [sys.executable, "-m", "trainer.cli.train", "--config", str(path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=240,
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("age-train: error:")]
    assert len(errors) == 1
    assert "pretrained: 'imagenet' weights for resnet50 could not be fetched" in errors[0]
    assert "Traceback" not in result.stderr
