"""Age metrics (Keras, for training; NumPy, for reports) and the ``age-evaluate`` command.

``age-evaluate --model FILE.h5 --csv FILE --images DIR [--aligned]`` prints one JSON object with ``mae``,
``rmse`` (years), ``cs5`` (share of predictions within 5 years), ``n`` (images scored), ``no_face`` (raw images
where no face was found), ``unreadable`` (rows whose image is missing or cannot be decoded), ``coverage`` (share of
true ages inside the ``--coverage`` interval, calibrated when the model is) and ``mean_interval_width`` (years);
``--groups COL[,COL]`` adds ``groups: {COL: {value: {mae, rmse, coverage, n}}}``. Without
``--aligned`` each image is aligned with ``core.face`` exactly as the model's metadata says (``img_size``,
``chip_padding``, ``detector``, ``upsample``), largest face; with it, the images are chips and are only resized.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from keras import ops

from core.coral import labels_from_probas, probas_from_logits
from core.distribution import Calibration, central_interval, interval_mass, interval_report
from core.errors import AgeEstimationError, ConfigError, ImageError


def _ranks(logits: Any, threshold: float) -> Any:
    """Predicted ranks ``(N,)`` float32 from CORAL logits ``(N, K-1)``: count of ``sigmoid > threshold``."""
    above = ops.sigmoid(ops.cast(logits, "float32")) > threshold
    return ops.sum(ops.cast(above, "float32"), axis=-1)


@keras.saving.register_keras_serializable(package="trainer")
class AgeMAE(keras.metrics.Mean):
    """Mean absolute error in years between integer ranks ``y_true (N,)`` and the ranks decoded from logits."""

    def __init__(self, threshold: float = 0.5, name: str = "mae", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        super().update_state(ops.abs(_ranks(y_pred, self.threshold) - truth), sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


@keras.saving.register_keras_serializable(package="trainer")
class AgeRMSE(keras.metrics.Mean):
    """Root mean squared error in years; accumulates squared errors and takes the root at the end."""

    def __init__(self, threshold: float = 0.5, name: str = "rmse", **kwargs: Any) -> None:
        super().__init__(name=name, **kwargs)
        self.threshold = float(threshold)

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> None:
        truth = ops.reshape(ops.cast(y_true, "float32"), (-1,))
        super().update_state(ops.square(_ranks(y_pred, self.threshold) - truth), sample_weight)

    def result(self) -> Any:
        return ops.sqrt(super().result())

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "threshold": self.threshold}


def age_metrics(true_ages: Sequence[float] | np.ndarray, predicted_ages: Sequence[float] | np.ndarray) -> dict:
    """``mae``, ``rmse`` (years), ``cs5`` (fraction with |error| <= 5), ``n`` and ``mae_per_decade``.

    ``mae_per_decade`` maps ``"0-9"``, ``"10-19"``, ... (true age) to ``{"mae": float, "n": int}``.
    """
    truth = np.asarray(true_ages, dtype=np.float64).reshape(-1)
    error = np.asarray(predicted_ages, dtype=np.float64).reshape(-1) - truth
    if truth.size == 0:
        return {"mae": None, "rmse": None, "cs5": None, "n": 0, "mae_per_decade": {}}
    decades: dict[str, dict[str, float | int]] = {}
    for decade in sorted(set((truth // 10).astype(int))):
        mask = (truth // 10).astype(int) == decade
        decades[f"{decade * 10}-{decade * 10 + 9}"] = {
            "mae": round(float(np.abs(error[mask]).mean()), 4),
            "n": int(mask.sum()),
        }
    return {
        "mae": round(float(np.abs(error).mean()), 4),
        "rmse": round(float(np.sqrt(np.square(error).mean())), 4),
        "cs5": round(float((np.abs(error) <= 5).mean()), 4),
        "n": int(truth.size),
        "mae_per_decade": decades,
    }


def predict_batches(
    model: keras.Model, batches: Iterable[tuple[Any, Any]], start_label: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``(images, targets)`` batches; return ``(targets, predicted ages)`` as 1-D arrays.

    Targets come back from the batches themselves, so rows a dataset dropped (undecodable images) cannot
    misalign predictions and truths. Predicted age = ``start_label`` + rank.
    """
    targets, predictions = [], []
    for images, batch_targets in batches:
        logits = np.asarray(model.predict_on_batch(images))
        predictions.append(start_label + labels_from_probas(probas_from_logits(logits), threshold))
        targets.append(np.asarray(batch_targets).reshape(-1))
    if not targets:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(targets), np.concatenate(predictions)


def read_age_csv(csv_path: Path, images: Path, columns: Sequence[str] = ()) -> pd.DataFrame:
    """``Path, Age`` rows of ``csv_path`` (plus ``columns``) with paths joined to ``images``; ConfigError names a
    missing folder, a bad file or a bad column."""
    if not images.is_dir():
        raise ConfigError(f"--images {images}: folder not found")
    try:
        table = pd.read_csv(csv_path, dtype={"ID": str, "Path": str})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--csv {csv_path}: cannot read CSV ({exc})") from None
    for column in ("Path", "Age", *columns):
        if column not in table.columns:
            raise ConfigError(f"--csv {csv_path}: column {column!r} missing")
    ages = pd.to_numeric(table["Age"], errors="coerce")
    if ages.isna().any():
        raise ConfigError(f"--csv {csv_path}: column 'Age': not a number on line {int(ages.isna().argmax()) + 2}")
    extra = {column: table[column].to_numpy() for column in columns}
    return pd.DataFrame({"Path": [str(images / p) for p in table["Path"]], "Age": ages.to_numpy()} | extra)


def aligned_batches(table: pd.DataFrame, img_size: int, batch_size: int) -> tuple[Iterable[Any], int, int]:
    """``(batches, rows with a file, rows without)`` for chips listed in ``table`` (``Path``, ``Age``), resized to
    ``img_size``; batches yield ``(images, row positions in table)`` and drop undecodable files on the fly."""
    from trainer.data import make_dataset

    exists = table["Path"].map(lambda p: Path(p).is_file()).to_numpy(dtype=bool)
    usable = table[exists].assign(label=np.flatnonzero(exists).astype(np.int32))
    batches = make_dataset(usable, img_size, batch_size, training=False, cache="none")
    return batches, len(usable), int((~exists).sum())


def _raw_chips(
    table: pd.DataFrame, metadata: dict[str, Any], batch_size: int, counts: dict[str, int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Align each raw image (largest face); yield ``(float32 chips, row positions)`` batches, counting misses."""
    from tqdm import tqdm

    from core.face import FaceAligner
    from core.image import read_image

    aligner = FaceAligner.from_metadata(metadata)
    chips: list[np.ndarray] = []
    rows: list[int] = []
    for row, path in tqdm(enumerate(table["Path"]), total=len(table), file=sys.stderr):
        try:
            faces = aligner.align(read_image(path))
        except (ImageError, OSError):
            counts["unreadable"] += 1
            continue
        if not faces:
            counts["no_face"] += 1
            continue
        chips.append(faces[0].chip)
        rows.append(row)
        if len(chips) == batch_size:
            yield np.stack(chips).astype(np.float32), np.asarray(rows)
            chips, rows = [], []
    if chips:
        yield np.stack(chips).astype(np.float32), np.asarray(rows)


def _counted(batches: Iterable[Any], usable: int, counts: dict[str, int]) -> Iterator[Any]:
    seen = 0
    for images, rows in batches:
        seen += len(rows)
        yield images, rows
    counts["unreadable"] += usable - seen  # dropped on the fly: present but undecodable


def image_batches(
    table: pd.DataFrame, metadata: dict[str, Any], aligned: bool, batch_size: int
) -> tuple[Iterable[tuple[Any, Any]], dict[str, int]]:
    """``(batches of (images, row positions in table), counts)``: chips resized (``aligned``) or photos aligned as
    the model's metadata says; ``counts`` (``no_face``, ``unreadable``) is complete once the batches are consumed."""
    counts = {"no_face": 0, "unreadable": 0}
    if not aligned:
        return _raw_chips(table, metadata, batch_size, counts), counts
    batches, usable, counts["unreadable"] = aligned_batches(table, int(metadata["img_size"]), batch_size)
    return _counted(batches, usable, counts), counts


def evaluate(
    model_path: Path,
    csv_path: Path,
    images: Path,
    aligned: bool,
    batch_size: int = 64,
    plots: Path | None = None,
    groups: Sequence[str] = (),
    coverage: float = 0.9,
) -> dict:
    """Score a saved model on a labelled CSV; returns the dict ``age-evaluate`` prints.

    ``coverage`` and ``mean_interval_width`` (years, ``high - low``) are those of the central interval at the
    requested ``coverage`` (calibrated when the model's metadata holds a calibration); ``groups`` names CSV columns
    to break the scores down by. With ``plots``, also writes there ``metrics.json`` (the result plus MAE per decade,
    coverage and width at 50/80/90/95% and mean width per decade), ``mae_per_decade.png``,
    ``predicted_vs_true.png``, ``coverage.png`` and, with ``groups``, ``groups.png``.
    """
    from core.artifact import load_model, read_metadata
    from trainer.calibrate import REPORTED_COVERAGES, predict_logits

    metadata = read_metadata(model_path)
    table = read_age_csv(csv_path, images, groups)
    model = load_model(model_path)
    start = int(metadata["start_label"])
    batches, counts = image_batches(table, metadata, aligned, batch_size)
    rows, logits = predict_logits(model, batches)
    scored = table.iloc[rows.astype(np.int64)]
    truth = scored["Age"].to_numpy(dtype=np.float64)
    probas = probas_from_logits(logits)
    predicted = start + labels_from_probas(probas, float(metadata["threshold"]))
    calibration = Calibration.from_metadata(metadata)
    ranks = np.clip(np.rint(truth).astype(np.int64) - start, 0, logits.shape[1])
    low, high = central_interval(probas, interval_mass(calibration, coverage))
    covered = (low <= ranks) & (ranks <= high)
    scores = age_metrics(truth, predicted)
    result = {key: scores[key] for key in ("mae", "rmse", "cs5", "n")} | counts
    result |= {
        "coverage": round(float(covered.mean()), 4) if len(rows) else None,
        "mean_interval_width": round(float((high - low).mean()), 3) if len(rows) else None,
        "interval_coverage": coverage,
        "calibrated": calibration is not None,
    }
    if groups:
        from trainer.breakdown import group_metrics

        result["groups"] = group_metrics(scored, predicted - truth, covered, groups)
    if plots is not None:
        from trainer.breakdown import write_evaluation_report

        intervals = interval_report(probas, ranks, calibration, REPORTED_COVERAGES)
        names = (model_path.name, csv_path.name, calibration is not None)
        write_evaluation_report(
            plots,
            result | {"model": str(model_path), "csv": str(csv_path)},
            scores,
            truth,
            predicted,
            intervals,
            high - low,
            names,
        )
    return result


def _coverage(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1) (got {text})")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-evaluate``; exit code 2 on a bad argument, file or model."""
    parser = argparse.ArgumentParser(prog="age-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, type=Path, help="a .h5 saved by age-train")
    parser.add_argument("--csv", required=True, type=Path, help="CSV with Path,Age (Path relative to --images)")
    parser.add_argument("--images", required=True, type=Path, help="folder the CSV's paths are relative to")
    parser.add_argument("--aligned", action="store_true", help="images are aligned chips: resize, do not detect")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--plots", type=Path, help="also write metrics.json (with MAE per decade) and PNG plots to this folder"
    )
    parser.add_argument("--groups", default="", help="CSV columns to break the scores down by, e.g. Gender,Race")
    parser.add_argument("--coverage", type=_coverage, default=0.9, help="interval coverage to score (default 0.9)")
    args = parser.parse_args(argv)
    groups = [column.strip() for column in args.groups.split(",") if column.strip()]
    try:
        result = evaluate(
            args.model, args.csv, args.images, args.aligned, args.batch_size, args.plots, groups, args.coverage
        )
    except AgeEstimationError as exc:
        print(f"age-evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
