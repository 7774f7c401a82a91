"""The callbacks of ``age-train``'s fit: checkpoints that resume, early stopping that survives a resume, logs.

``training_callbacks(config, run_dir)`` returns them in the order they must run at each epoch's end: the
last-epoch backup first (what ``resume`` continues from), then the best-validation-MAE weights, early stopping,
the ``history.csv`` row and TensorBoard.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import keras

from trainer.training.config import TrainConfig
from trainer.training.run_folder import read_history


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """``EarlyStopping`` whose state (best value, epochs waited) is replayed from the run's ``history.csv``.

    Keras resets ``best`` and ``wait`` at every ``fit``, so a resumed run would wait ``patience`` epochs more
    than an uninterrupted one. Replaying the epochs the run already finished (those before the epoch
    ``BackupAndRestore`` resumes at) puts the callback where it was when the run was killed.
    """

    def __init__(self, history_csv: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.history_csv = history_csv

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        history = read_history(self.history_csv)
        if self.monitor not in history:
            return
        if self.monitor_op is None:
            self._set_monitor_op()
        # BackupAndRestore (earlier in the list) has set the epoch this fit starts at; rows after it are redone.
        start = getattr(self.model, "_initial_epoch", None)
        wait, best, best_epoch = 0, None, 0  # where super().on_train_begin just left them
        for epoch, value in zip(history["epoch"], history[self.monitor], strict=True):
            if start is not None and epoch >= start:
                break
            if epoch < self.start_from_epoch:
                continue
            wait += 1
            if self._is_improvement(float(value), best):
                wait, best, best_epoch = 0, float(value), int(epoch)
        self.wait, self.best, self.best_epoch = wait, best, best_epoch


class KnownStepsProgbar(keras.callbacks.ProgbarLogger):
    """Keras' progress bar, told the epoch's length from the first epoch on.

    Keras cannot know the training dataset's length (undecodable images are dropped on the fly), so its own bar
    counts ``1/Unknown`` through epoch 1; ``steps`` is the length of an epoch with no image dropped.
    """

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps = steps

    def set_params(self, params: dict[str, Any]) -> None:
        super().set_params(params)
        self.target = self.target or self.steps


def training_callbacks(config: TrainConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    """The callbacks for ``config`` writing into ``run_dir``; without ``resume``, the previous run's are cleared."""
    history_csv = run_dir / "history.csv"
    if not config.resume and history_csv.exists():
        history_csv.unlink()
    callbacks: list[keras.callbacks.Callback] = []
    if config.checkpoint:
        checkpoints = run_dir / "checkpoints"
        if not config.resume and checkpoints.exists():
            shutil.rmtree(checkpoints)
        previous = read_history(history_csv) if config.resume else None
        best_so_far = float(previous["val_mae"].min()) if previous is not None and "val_mae" in previous else None
        callbacks += [
            # Two alternating backups: a kill while one is being written leaves the other to resume from.
            keras.callbacks.BackupAndRestore(str(checkpoints), delete_checkpoint=False, double_checkpoint=True),
            keras.callbacks.ModelCheckpoint(
                str(checkpoints / "best.weights.h5"),
                monitor="val_mae",
                mode="min",
                save_best_only=True,
                save_weights_only=True,
                initial_value_threshold=best_so_far,
            ),
        ]
    patience = config.early_stopping_patience or config.num_epochs
    callbacks += [
        ResumableEarlyStopping(
            history_csv, monitor="val_mae", mode="min", patience=patience, restore_best_weights=True
        ),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
    ]
    if config.logs:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch"))
    return callbacks
