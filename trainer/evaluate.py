"""Age metrics (Keras, for training; NumPy, for reports) and the ``age-evaluate`` command.

``age-evaluate --model FILE.h5 --csv FILE --images DIR [--aligned]`` prints one JSON object with ``mae``,
``rmse`` (years), ``cs5`` (share of predictions within 5 years), ``n`` (images scored), ``no_face`` (raw images
where no face was found) and ``unreadable`` (rows whose image is missing or cannot be decoded). Without
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


def read_age_csv(csv_path: Path, images: Path) -> pd.DataFrame:
    """``Path, Age`` rows of ``csv_path`` with paths joined to ``images``; ConfigError names a missing folder, a bad
    file or a bad column."""
    if not images.is_dir():
        raise ConfigError(f"--images {images}: folder not found")
    try:
        table = pd.read_csv(csv_path, dtype={"ID": str, "Path": str})
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--csv {csv_path}: cannot read CSV ({exc})") from None
    for column in ("Path", "Age"):
        if column not in table.columns:
            raise ConfigError(f"--csv {csv_path}: column {column!r} missing")
    ages = pd.to_numeric(table["Age"], errors="coerce")
    if ages.isna().any():
        raise ConfigError(f"--csv {csv_path}: column 'Age': not a number on line {int(ages.isna().argmax()) + 2}")
    return pd.DataFrame({"Path": [str(images / p) for p in table["Path"]], "Age": ages.to_numpy()})


def aligned_batches(table: pd.DataFrame, img_size: int, batch_size: int) -> tuple[Iterable[Any], int, int]:
    """``(batches, rows with a file, rows without)`` for chips listed in ``table`` (``Path``, ``Age``), resized to
    ``img_size``; batches yield ``(images, ranks)`` and drop undecodable files on the fly."""
    from trainer.data import make_dataset

    exists = table["Path"].map(lambda p: Path(p).is_file())
    usable = table[exists].assign(label=table["Age"].round().astype(np.int32))
    batches = make_dataset(usable, img_size, batch_size, training=False, cache="none")
    return batches, len(usable), int((~exists).sum())


def _raw_chips(
    table: pd.DataFrame, metadata: dict[str, Any], batch_size: int, counts: dict[str, int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Align each raw image (largest face); yield ``(float32 chips, true ages)`` batches, counting misses."""
    from tqdm import tqdm

    from core.face import FaceAligner
    from core.image import read_image

    aligner = FaceAligner.from_metadata(metadata)
    chips: list[np.ndarray] = []
    ages: list[float] = []
    for path, age in tqdm(zip(table["Path"], table["Age"], strict=True), total=len(table), file=sys.stderr):
        try:
            faces = aligner.align(read_image(path))
        except (ImageError, OSError):
            counts["unreadable"] += 1
            continue
        if not faces:
            counts["no_face"] += 1
            continue
        chips.append(faces[0].chip)
        ages.append(float(age))
        if len(chips) == batch_size:
            yield np.stack(chips).astype(np.float32), np.asarray(ages)
            chips, ages = [], []
    if chips:
        yield np.stack(chips).astype(np.float32), np.asarray(ages)


def evaluate(
    model_path: Path, csv_path: Path, images: Path, aligned: bool, batch_size: int = 64, plots: Path | None = None
) -> dict:
    """Score a saved model on a labelled CSV; returns the dict ``age-evaluate`` prints.

    With ``plots``, also writes there ``metrics.json`` (the result plus MAE per decade of true age),
    ``mae_per_decade.png`` and ``predicted_vs_true.png``.
    """
    from core.artifact import load_model, read_metadata

    metadata = read_metadata(model_path)
    table = read_age_csv(csv_path, images)
    model = load_model(model_path)
    counts = {"no_face": 0, "unreadable": 0}
    batches: Iterable[tuple[Any, Any]]
    expected: int | None = None
    if aligned:
        batches, expected, counts["unreadable"] = aligned_batches(table, int(metadata["img_size"]), batch_size)
    else:
        batches = _raw_chips(table, metadata, batch_size, counts)
    truth, predicted = predict_batches(model, batches, int(metadata["start_label"]), float(metadata["threshold"]))
    if expected is not None:
        counts["unreadable"] += expected - len(truth)
    scores = age_metrics(truth, predicted)
    result = {key: scores[key] for key in ("mae", "rmse", "cs5", "n")} | counts
    if plots is not None:
        from trainer.report import plot_mae_per_decade, plot_predicted_vs_true

        plots.mkdir(parents=True, exist_ok=True)
        report = result | {"model": str(model_path), "csv": str(csv_path), "mae_per_decade": scores["mae_per_decade"]}
        (plots / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
        title = f"{model_path.name}: MAE per decade on {csv_path.name}"
        plot_mae_per_decade(scores["mae_per_decade"], plots / "mae_per_decade.png", title)
        plot_predicted_vs_true(truth, predicted, plots / "predicted_vs_true.png")
    return result


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
    args = parser.parse_args(argv)
    try:
        result = evaluate(args.model, args.csv, args.images, args.aligned, args.batch_size, args.plots)
    except AgeEstimationError as exc:
        print(f"age-evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
