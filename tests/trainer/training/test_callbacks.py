"""age-train's callbacks: early stopping resumes with the state an uninterrupted run would have had."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.trainer.training.test_train import write_config
from trainer.training.callbacks import KnownStepsProgbar, ResumableEarlyStopping, training_callbacks
from trainer.training.config import load_config

VAL_MAE = [5.0, 4.0, 4.5, 4.6, 4.7, 4.8, 4.9]
PATIENCE = 2


def tiny_model(initial_epoch: int | None = None) -> keras.Model:
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.stop_training = False
    model._initial_epoch = initial_epoch
    return model


def stopped_epoch(callback: keras.callbacks.Callback, model: keras.Model, first_epoch: int) -> int | None:
    """Drive ``callback`` through the epochs of ``VAL_MAE`` from ``first_epoch``; the epoch it stops after."""
    callback.set_model(model)
    callback.on_train_begin()
    for epoch in range(first_epoch, len(VAL_MAE)):
        callback.on_epoch_end(epoch, {"val_mae": VAL_MAE[epoch]})
        if model.stop_training:
            return epoch
    return None


def early_stopping(tmp_path: Path, resume: bool) -> ResumableEarlyStopping:
    config = write_config(tmp_path, run_dir="runs/fixed", num_epochs=len(VAL_MAE), early_stopping_patience=PATIENCE)
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "labels.csv").touch()
    callbacks = training_callbacks(load_config(config, {"resume": resume}), tmp_path / "runs" / "fixed")
    return next(c for c in callbacks if isinstance(c, ResumableEarlyStopping))


@pytest.mark.parametrize("interrupted_after", [0, 1, 2])
def test_a_resumed_run_stops_where_an_uninterrupted_one_would(tmp_path: Path, interrupted_after: int) -> None:
    (tmp_path / "runs" / "fixed").mkdir(parents=True)
    uninterrupted = stopped_epoch(early_stopping(tmp_path, resume=False), tiny_model(), 0)
    assert uninterrupted == 3, "two epochs without a better val_mae after epoch 1"
    done = range(interrupted_after + 1)
    history = pd.DataFrame({"epoch": list(done), "loss": 1.0, "val_mae": [VAL_MAE[e] for e in done]})
    history.to_csv(tmp_path / "runs" / "fixed" / "history.csv", index=False)
    resumed = early_stopping(tmp_path, resume=True)
    assert stopped_epoch(resumed, tiny_model(initial_epoch=interrupted_after + 1), interrupted_after + 1) == 3
    assert resumed.best == pytest.approx(4.0)


def test_rows_the_resumed_fit_redoes_are_not_replayed(tmp_path: Path) -> None:
    (tmp_path / "runs" / "fixed").mkdir(parents=True)
    # Epoch 2 was logged but the checkpoint it resumes from is epoch 1's (a kill between the two writes).
    history = pd.DataFrame({"epoch": [0, 1, 2], "val_mae": VAL_MAE[:3]})
    history.to_csv(tmp_path / "runs" / "fixed" / "history.csv", index=False)
    resumed = early_stopping(tmp_path, resume=True)
    resumed.set_model(tiny_model(initial_epoch=2))
    resumed.on_train_begin()
    assert resumed.wait == 0
    assert resumed.best == pytest.approx(4.0)


@pytest.mark.parametrize("progbar", [None, KnownStepsProgbar(3)], ids=["keras", "known-steps"])
def test_the_first_epoch_counts_against_its_length(progbar, capsys: pytest.CaptureFixture[str]) -> None:
    # A filter makes the length unknown to Keras, as age-train's dropping of undecodable images does.
    data = tf.data.Dataset.from_tensor_slices((np.zeros((6, 1), "float32"), np.zeros(6, "float32")))
    data = data.filter(lambda x, y: True).batch(2)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(data, epochs=1, verbose=1, callbacks=[progbar] if progbar else [])
    shown = capsys.readouterr().out
    if progbar is None:
        assert "Unknown" in shown, "Keras alone cannot know the length: the case this callback is for"
    else:
        assert "Unknown" not in shown
        assert "3/3" in shown
