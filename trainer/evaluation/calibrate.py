"""Calibrated age intervals for a trained model, and the work of ``age-calibrate``, which recalibrates a ``.h5``.

``age-calibrate --model M.h5 --csv C --images D [--aligned] [--out NEW.h5]`` scores the labelled photos (or, with
``--aligned``, chips) of ``C``, fits the split-conformal calibration of ``core.distribution`` on them and writes it
into the model metadata (key ``calibration``), in place or to ``--out``. Only the metadata changes: the file is
copied next to its destination, its ``age_estimation`` attribute rewritten and the copy renamed into place, so a
crash never leaves half a file. The photos must not have been used to train the model (conformal guarantees need
exchangeable, unseen faces): a run's ``val.csv``, or a user's own labelled photos. Ages outside the model's label
range are moved onto its ends (the model cannot say more) and counted as ``outside_range``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from core.artifact import METADATA_ATTR, read_metadata
from core.calibration import CALIBRATION_KEY, Calibration, decade_edges, decade_report, interval_report
from core.coral import probas_from_logits
from core.distribution import REPORTED_COVERAGES
from core.errors import ConfigError
from trainer.data.labels import clipped_ranks, read_age_csv
from trainer.evaluation.scoring import image_batches, predict_logits

__all__ = ["calibrate_model", "calibrate_splits", "fit_calibration"]


def fit_calibration(logits: np.ndarray, ages: np.ndarray, start_label: int, source: str) -> Calibration:
    """Calibrate on logits ``(n, K-1)`` and true ages (years) ``(n,)``; out-of-range ages are clipped and counted.

    The calibration is age-conditional: one split-conformal fit per decade of predicted age (Mondrian, see
    ``core.distribution``), so the interval holds for children and the old as well as on average.
    """
    ranks, outside = clipped_ranks(ages, start_label, logits.shape[1] + 1)
    edges = decade_edges(start_label)
    return Calibration.fit(probas_from_logits(logits), ranks, source, outside, group_edges=edges)


def calibrate_splits(
    model: Any,
    val_batches: Iterable[Any],
    test_batches: Iterable[Any],
    start_label: int,
    source: str = "val.csv",
) -> tuple[dict[str, Any], dict[str, Any]]:
    """For ``age-train``: calibrate on the validation batches (targets are ranks), report on the test batches.

    Returns ``(metadata entry, report)``; the report maps ``"raw"`` and ``"calibrated"`` to
    ``{"0.5": {"coverage", "mean_width"}, ...}`` on the test split (widths in years), and ``"by_decade"`` to the
    calibrated 90% interval's coverage and width per decade of true age.
    """
    val_ranks, val_logits = predict_logits(model, val_batches)
    calibration = fit_calibration(val_logits, val_ranks + int(start_label), start_label, source)
    test_ranks, test_logits = predict_logits(model, test_batches)
    probas = probas_from_logits(test_logits)
    report = {
        "raw": interval_report(probas, test_ranks, None, REPORTED_COVERAGES),
        "calibrated": interval_report(probas, test_ranks, calibration, REPORTED_COVERAGES),
        "by_decade": decade_report(probas, test_ranks, calibration, start_label),
        "calibrated_on": {"source": source, "n": calibration.n, "groups": len(calibration.groups)},
    }
    return calibration.to_metadata(), report


def write_metadata(source: Path, target: Path, metadata: dict[str, Any]) -> Path:
    """Copy ``source`` to ``target`` with ``metadata`` as its ``age_estimation`` attribute, atomically."""
    import h5py

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.h5", dir=target.parent)
    os.close(fd)
    try:
        shutil.copyfile(source, tmp_name)
        with h5py.File(tmp_name, "a") as handle:
            handle.attrs[METADATA_ATTR] = json.dumps(metadata, sort_keys=True, default=str)
        os.chmod(tmp_name, source.stat().st_mode & 0o777)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def calibrate_model(
    model_path: Path, csv_path: Path, images: Path, aligned: bool, out: Path | None = None, batch_size: int = 64
) -> tuple[Path, dict[str, Any]]:
    """Fit the calibration of ``model_path`` on a labelled CSV and write it; return ``(written file, summary)``."""
    from core.artifact import load_model

    target = out or model_path
    if target.suffix != ".h5":
        raise ConfigError(f"--out {target}: the model file name must end in .h5")
    metadata = read_metadata(model_path)
    table = read_age_csv(csv_path, images)
    model = load_model(model_path)
    batches, counts = image_batches(table, metadata, aligned, batch_size)
    rows, logits = predict_logits(model, batches, progress=aligned)
    if len(rows) == 0:
        raise ConfigError(f"--csv {csv_path}: no image could be scored ({counts})")
    ages = table["Age"].to_numpy()[rows.astype(np.int64)]
    calibration = fit_calibration(logits, ages, int(metadata["start_label"]), csv_path.name)
    metadata[CALIBRATION_KEY] = calibration.to_metadata()
    written = write_metadata(model_path, target, metadata)
    ranks, _ = clipped_ranks(ages, int(metadata["start_label"]), logits.shape[1] + 1)
    summary = {
        "n": calibration.n,
        "outside_range": calibration.outside_range,
        **{key: int(value) for key, value in counts.items()},
        "mass": {str(c): round(calibration.mass(c), 4) for c in REPORTED_COVERAGES},
        "raw_intervals": interval_report(probas_from_logits(logits), ranks, None, REPORTED_COVERAGES),
        "groups": [group.summary(int(metadata["start_label"]), (0.9,)) for group in calibration.groups],
    }
    return written, summary
