"""The report step of ``age-train`` (chief worker only): score the serving copy, write ``metrics.json`` and the
plots into the run folder, and save the model with its metadata (``core.artifact.save_model``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from core.artifact import save_model
from trainer.evaluation.calibrate import calibrate_splits
from trainer.evaluation.metrics import age_metrics
from trainer.evaluation.plots import write_plots
from trainer.evaluation.scoring import predict_batches
from trainer.model.pretrained import pretrained_name
from trainer.training.config import TrainConfig
from trainer.training.fit import BASIC_RESNETS
from trainer.training.run_folder import Run, read_history, shown_path


def _versions() -> dict[str, str]:
    versions = {}
    for package in ("tensorflow", "tensorflow-cpu", "keras", "numpy", "dlib-bin", "dlib"):
        try:
            versions[package] = importlib_metadata.version(package)
        except importlib_metadata.PackageNotFoundError:
            continue
    return versions


def report(config: TrainConfig, run: Run, final: keras.Model, datasets: dict[str, tf.data.Dataset]) -> Path:
    """Score ``final`` on the validation and test splits, calibrate it on validation, write ``metrics.json`` and
    the PNGs, and save it as ``output_dir/{model_name}_{stamp}.h5``; returns that path."""
    summary, splits = run.summary, run.splits
    history = read_history(run.run_dir / "history.csv")
    results: dict[str, Any] = {"epochs": len(history), "data": summary.as_dict()}
    median = float(np.median(splits["train"]["Age"]))
    for name in ("val", "test"):
        ranks, predicted = predict_batches(final, datasets[name], summary.start_label, config.threshold)
        true_ages = ranks + summary.start_label
        results[name] = age_metrics(true_ages, predicted)
        results[name]["median_baseline_mae"] = round(float(np.abs(true_ages - median).mean()), 4)
    calibration, results["intervals"] = calibrate_splits(final, datasets["val"], datasets["test"], summary.start_label)
    (run.run_dir / "metrics.json").write_text(json.dumps(results, indent=2) + "\n")
    write_plots(run.run_dir, history, true_ages, predicted)
    test = results["test"]
    print(f"test: MAE {test['mae']} RMSE {test['rmse']} CS@5 {test['cs5']} (n {test['n']})")

    meta = {
        "start_label": summary.start_label,
        "end_label": summary.end_label,
        "num_classes": summary.num_classes,
        "img_size": config.img_size,
        "threshold": config.threshold,
        "arch_type": config.arch_type,
        "arch_subtype": config.arch_subtype,
        "pretrained": pretrained_name(config.pretrained),
        **run.alignment,
        "test_time_flip": config.test_time_flip,
        "trained_on": shown_path(config.csv_path),
        "data": summary.as_dict() | {name: len(frame) for name, frame in splits.items()},
        "test_metrics": {key: test[key] for key in ("mae", "rmse", "cs5", "n")},
        "calibration": calibration,
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "run_dir": shown_path(run.run_dir),
    }
    if config.arch_type == "resnet" and config.arch_subtype in BASIC_RESNETS:
        meta["width"] = config.width
    return save_model(final, config.output_dir / f"{config.model_name}_{run.stamp}.h5", meta)
