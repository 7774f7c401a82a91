"""``age-train --config FILE [--set KEY=VALUE ...]``: the batch training job, config to self-describing ``.h5``.

Steps: validate the config and the CSV (exit code 2 on any problem, before any work); split by ``ID`` into
train/val/test (CSVs in the run folder); fit with the CORAL loss (paper's importance weights when
``task_weighting``), reporting MAE and RMSE in years; keep the best-validation-MAE weights and a last-epoch
checkpoint that ``resume: true`` continues from; score the test split (``metrics.json`` + PNGs); save the best
model with ``core.artifact.save_model``. The last line printed is ``saved: PATH``.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import warnings
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from core.artifact import save_model
from core.coral import CoralLayer, coral_loss, importance_weights, levels_from_labels
from core.errors import ConfigError
from core.tta import with_flip_averaging
from trainer.calibrate import calibrate_splits
from trainer.config import TrainConfig, fill_run_dir, load_config, parse_overrides, resolve_alignment, timestamp
from trainer.data import DataSummary, load_table, make_dataset, split_by_id
from trainer.distribute import choose_strategy, is_chief, set_precision
from trainer.evaluate import AgeMAE, AgeRMSE, age_metrics, predict_batches
from trainer.model import build_model, is_whole_model_weights
from trainer.optim import freeze_callbacks, make_optimizer
from trainer.pretrained import check_pretrained, pretrained_name
from trainer.report import read_history, write_plots
from trainer.robustness import Robustness

SPLITS = ("train", "val", "test")
_BASIC_RESNETS = (18, 34)


def pick_run_dir(config: TrainConfig, stamp: str) -> Path:
    """The run folder: with ``resume`` and a ``{timestamp}`` in ``run_dir``, the newest matching run that has a
    last-epoch checkpoint; otherwise ``run_dir`` filled with ``stamp``."""
    if config.resume and "{timestamp}" in str(config.run_dir):
        pattern = fill_run_dir(config, "*")
        runs = [p.parent.parent for p in pattern.parent.glob(f"{pattern.name}/checkpoints/training_metadata.json")]
        if runs:
            return max(runs, key=lambda run: run.stat().st_mtime)
    return fill_run_dir(config, stamp)


def prepare_splits(config: TrainConfig, table: pd.DataFrame, run_dir: Path) -> dict[str, pd.DataFrame]:
    """The ID-disjoint splits: re-read from the run folder when resuming, else drawn and written there."""
    files = {name: run_dir / f"{name}.csv" for name in SPLITS}
    if config.resume and all(path.is_file() for path in files.values()):
        return {name: pd.read_csv(path, dtype={"ID": str}) for name, path in files.items()}
    splits = split_by_id(table, config.val_fraction, config.test_fraction, config.split_seed_or_seed)
    for name, frame in splits.items():
        frame.to_csv(files[name], index=False)
    return splits


def _build(config: TrainConfig, num_classes: int, pretrained: bool = True) -> keras.Model:
    extra = {"width": config.width} if config.arch_type == "resnet" and config.arch_subtype in _BASIC_RESNETS else {}
    return build_model(
        config.arch_type,
        config.arch_subtype,
        config.img_size,
        num_classes,
        dropout=config.dropout,
        pretrained=config.pretrained if pretrained else None,
        **extra,
    )


def init_coral_biases(model: keras.Model, labels: np.ndarray, num_classes: int) -> None:
    """Start each CORAL bias at the training prior's log-odds ``logit(P(y > k))``.

    The untrained model then predicts the training median rank instead of the middle of the range, so the
    first epochs learn faces rather than the label distribution (biases move only ~learning_rate per step).
    The prior is non-increasing in k, so the biases stay ordered as the paper's Theorem 1 needs.
    """
    share = np.clip(levels_from_labels(labels, num_classes).mean(axis=0), 1e-3, 1 - 1e-3)
    for layer in model.layers:
        if isinstance(layer, CoralLayer):
            layer.coral_bias.assign(np.log(share / (1 - share)).astype("float32"))
            return


def _callbacks(config: TrainConfig, run_dir: Path) -> list[keras.callbacks.Callback]:
    history_csv = run_dir / "history.csv"
    if not config.resume and history_csv.exists():
        history_csv.unlink()
    callbacks: list[keras.callbacks.Callback] = []
    if config.checkpoint:
        checkpoints = run_dir / "checkpoints"
        if not config.resume and checkpoints.exists():
            shutil.rmtree(checkpoints)
        previous = pd.read_csv(history_csv) if config.resume and history_csv.is_file() else pd.DataFrame()
        best_so_far = float(previous["val_mae"].min()) if "val_mae" in previous and len(previous) else None
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
        keras.callbacks.EarlyStopping(monitor="val_mae", mode="min", patience=patience, restore_best_weights=True),
        keras.callbacks.CSVLogger(str(history_csv), append=True),
    ]
    if config.logs:
        callbacks.append(keras.callbacks.TensorBoard(str(run_dir / "logs"), update_freq="epoch"))
    return callbacks


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "dlib-bin", "dlib"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def _write_config(config: TrainConfig, run_dir: Path, summary: DataSummary, alignment: dict[str, Any]) -> None:
    resolved = config.model_dump(mode="json") | {"run_dir": str(run_dir)} | alignment
    text = json.dumps(resolved, indent=2)
    (run_dir / "config.json").write_text(text + "\n")
    (run_dir / "data_summary.json").write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    if config.logs:
        import tensorflow as tf

        with tf.summary.create_file_writer(str(run_dir / "logs" / "config")).as_default():
            tf.summary.text("config", f"```\n{text}\n```", step=0)


def train(
    config: TrainConfig,
    table: pd.DataFrame,
    summary: DataSummary,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Path | None:
    """Run the whole job on a clean table; return the saved ``.h5`` (``None`` on non-chief workers)."""
    stamp = timestamp()
    keras.utils.set_random_seed(config.seed)
    run_dir = pick_run_dir(config, stamp)
    run_dir.mkdir(parents=True, exist_ok=True)
    alignment = resolve_alignment(config)
    print(f"run folder: {run_dir}")
    print("data: " + ", ".join(f"{key} {value}" for key, value in summary.as_dict().items()))
    splits = prepare_splits(config, table, run_dir)
    print("split: " + ", ".join(f"{name} {len(frame)}" for name, frame in splits.items()))
    _write_config(config, run_dir, summary, alignment)

    policy = set_precision(config.mixed_precision)
    strategy = choose_strategy(config.distribute)
    print(f"precision: {policy}; replicas: {strategy.num_replicas_in_sync}")
    cache_dir = run_dir / "cache"
    # A disk cache from an earlier start may hold another split or size; decoding once more is the safe price.
    shutil.rmtree(cache_dir, ignore_errors=True)
    datasets = {
        name: make_dataset(
            frame,
            config.img_size,
            config.batch_size,
            training=name == "train",
            augment=config.augment,
            zoom=config.augment_zoom,
            robustness=Robustness.from_config(config),
            cache=config.cache,
            cache_path=cache_dir / name,
            seed=config.seed,
        )
        for name, frame in splits.items()
    }
    num_classes = summary.num_classes
    train_labels = splits["train"]["label"].to_numpy()
    weights = importance_weights(train_labels, num_classes) if config.task_weighting else None
    steps_per_epoch = math.ceil(len(splits["train"]) / config.batch_size)
    with strategy.scope():
        model = _build(config, num_classes)
        if not is_whole_model_weights(config.pretrained):
            init_coral_biases(model, train_labels, num_classes)
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            loss=coral_loss(weights),
            metrics=[AgeMAE(config.threshold), AgeRMSE(config.threshold)],
        )
    with warnings.catch_warnings():
        # Keras says these about every tf.data input of unknown length (undecodable images drop on the fly).
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        model.fit(
            datasets["train"],
            validation_data=datasets["val"],
            epochs=config.num_epochs,
            callbacks=[*_callbacks(config, run_dir), *freeze_callbacks(config), *extra_callbacks],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    best = run_dir / "checkpoints" / "best.weights.h5"
    if config.checkpoint and best.is_file():
        model.load_weights(str(best))

    # Serve-ready copy: float32 everywhere and no distribution wrappers, whatever training used.
    keras.mixed_precision.set_global_policy("float32")
    final = _build(config, num_classes, pretrained=False)
    final.set_weights(model.get_weights())
    if config.test_time_flip:
        final = with_flip_averaging(final)
    if not is_chief():
        return None

    results: dict[str, Any] = {"epochs": len(read_history(run_dir / "history.csv")), "data": summary.as_dict()}
    median = float(np.median(splits["train"]["Age"]))
    for name in ("val", "test"):
        ranks, predicted = predict_batches(final, datasets[name], summary.start_label, config.threshold)
        true_ages = ranks + summary.start_label
        results[name] = age_metrics(true_ages, predicted)
        results[name]["median_baseline_mae"] = round(float(np.abs(true_ages - median).mean()), 4)
    calibration, results["intervals"] = calibrate_splits(final, datasets["val"], datasets["test"])
    (run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plots(run_dir, true_ages, predicted)
    test = results["test"]
    print(f"test: MAE {test['mae']} RMSE {test['rmse']} CS@5 {test['cs5']} (n {test['n']})")

    meta = {
        "start_label": summary.start_label,
        "end_label": summary.end_label,
        "num_classes": num_classes,
        "img_size": config.img_size,
        "threshold": config.threshold,
        "arch_type": config.arch_type,
        "arch_subtype": config.arch_subtype,
        "pretrained": pretrained_name(config.pretrained),
        **alignment,
        "test_time_flip": config.test_time_flip,
        "trained_on": shown_path(config.csv_path),
        "data": summary.as_dict() | {name: len(frame) for name, frame in splits.items()},
        "test_metrics": {key: test[key] for key in ("mae", "rmse", "cs5", "n")},
        "calibration": calibration,
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": shown_path(run_dir),
    }
    if config.arch_type == "resnet" and config.arch_subtype in _BASIC_RESNETS:
        meta["width"] = config.width
    return save_model(final, config.output_dir / f"{config.model_name}_{stamp}.h5", meta)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, so a shipped model names no home folder."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-train``; exit code 2 on a bad config or dataset."""
    parser = argparse.ArgumentParser(prog="age-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="training config JSON (configs/*.json)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key; VALUE is JSON (else a string); relative paths resolve against the cwd",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, parse_overrides(args.set))
        check_pretrained(config)
        table, summary = load_table(
            config.csv_path, config.img_dir, config.start_label, config.end_label, config.clip_ages
        )
        path = train(config, table, summary)
    except ConfigError as exc:
        print(f"age-train: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved: {path}" if path else "saved: (written by the chief worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
