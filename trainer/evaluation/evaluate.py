"""The work of ``age-evaluate``: score a saved model on a labelled CSV.

``age-evaluate --model FILE.h5 --csv FILE --images DIR [--aligned]`` prints one JSON object with ``mae``,
``rmse`` (years), ``cs5`` (share of predictions within 5 years), ``n`` (images scored), ``no_face`` (raw images
where no face was found), ``unreadable`` (rows whose image is missing or cannot be decoded), ``coverage`` (share of
true ages inside the ``--coverage`` interval, calibrated when the model is) and ``mean_interval_width`` (years);
``--groups COL[,COL]`` adds ``groups: {COL: {value: {mae, rmse, coverage, n}}}``. Without
``--aligned`` each image is aligned with ``core.face`` exactly as the model's metadata says (``img_size``,
``chip_padding``, ``detector``, ``upsample``), largest face; with it, the images are chips and are only resized.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.calibration import Calibration, decade_report, interval_mass, interval_report
from core.coral import labels_from_probas, probas_from_logits
from core.distribution import REPORTED_COVERAGES, central_interval
from trainer.data.labels import clipped_ranks, read_age_csv
from trainer.evaluation.groups import group_metrics
from trainer.evaluation.metrics import age_metrics
from trainer.evaluation.plots import plot_coverage, plot_groups, plot_mae_per_decade, plot_predicted_vs_true
from trainer.evaluation.scoring import image_batches, predict_logits


@dataclass(frozen=True)
class Scored:
    """A model's answers on the rows of a labelled table it could score (``n`` faces, ``K`` ranks)."""

    model_path: Path
    csv_path: Path
    table: pd.DataFrame  # the scored rows, in the order of the arrays below
    truth: np.ndarray  # true ages, years (n,)
    predicted: np.ndarray  # predicted ages, years (n,)
    probas: np.ndarray  # P(age > start_label + k) (n, K-1)
    ranks: np.ndarray  # true ages as ranks, clipped to the model's range (n,)
    calibration: Calibration | None
    counts: dict[str, int]  # no_face, unreadable
    start_label: int  # the model's first age: rank 0


def score(model_path: Path, csv_path: Path, table: pd.DataFrame, aligned: bool, batch_size: int) -> Scored:
    """Run the model of ``model_path`` over the photos (or, ``aligned``, chips) of ``table`` (``Path``, ``Age``)."""
    from core.artifact import read_metadata
    from core.engine import load_engine

    metadata = read_metadata(model_path)
    # The runtime and precision age-serve would run here (MODEL_RUNTIME / MODEL_PRECISION override), so the scores
    # are those of the served arithmetic: int8 on a CPU with VNNI once the model's precision report accepts it.
    model = load_engine(model_path)
    start = int(metadata["start_label"])
    batches, counts = image_batches(table, metadata, aligned, batch_size)
    rows, logits = predict_logits(model, batches)
    scored = table.iloc[rows.astype(np.int64)]
    truth = scored["Age"].to_numpy(dtype=np.float64)
    probas = probas_from_logits(logits)
    predicted = start + labels_from_probas(probas, float(metadata["threshold"]))
    ranks, _ = clipped_ranks(truth, start, logits.shape[1] + 1)
    calibration = Calibration.from_metadata(metadata)
    return Scored(model_path, csv_path, scored, truth, predicted, probas, ranks, calibration, counts, start)


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
    scored = score(model_path, csv_path, read_age_csv(csv_path, images, groups), aligned, batch_size)
    low, high = central_interval(scored.probas, interval_mass(scored.calibration, coverage, scored.probas))
    covered = (low <= scored.ranks) & (scored.ranks <= high)
    scores = age_metrics(scored.truth, scored.predicted)
    n = len(scored.truth)
    result = {key: scores[key] for key in ("mae", "rmse", "cs5", "n")} | scored.counts
    result |= {
        "coverage": round(float(covered.mean()), 4) if n else None,
        "mean_interval_width": round(float((high - low).mean()), 3) if n else None,
        "interval_coverage": coverage,
        "calibrated": scored.calibration is not None,
        "by_decade": decade_report(scored.probas, scored.ranks, scored.calibration, scored.start_label, coverage),
    }
    if groups:
        result["groups"] = group_metrics(scored.table, scored.predicted - scored.truth, covered, groups)
    if plots is not None:
        write_report(plots, result, scored, high - low)
    return result


def write_report(folder: Path, result: dict[str, Any], scored: Scored, widths: np.ndarray) -> None:
    """``age-evaluate --plots``: ``metrics.json`` (``result`` plus MAE per decade, intervals at 50/80/90/95% and the
    mean interval width per decade of true age, ``widths`` ``(n,)`` in years) and the PNG charts."""
    folder.mkdir(parents=True, exist_ok=True)
    scores = age_metrics(scored.truth, scored.predicted)
    intervals = interval_report(scored.probas, scored.ranks, scored.calibration, REPORTED_COVERAGES)
    per_decade = pd.Series(widths).groupby((scored.truth // 10 * 10).astype(int)).mean().round(3)
    report = result | {
        "model": str(scored.model_path),
        "csv": str(scored.csv_path),
        "mae_per_decade": scores["mae_per_decade"],
        "intervals": intervals,
        "mean_interval_width_per_decade": {f"{d}-{d + 9}": float(w) for d, w in per_decade.items()},
    }
    (folder / "metrics.json").write_text(json.dumps(report, indent=2) + "\n")
    model, csv = scored.model_path.name, scored.csv_path.name
    plot_mae_per_decade(scores["mae_per_decade"], folder / "mae_per_decade.png", f"{model}: MAE per decade on {csv}")
    plot_predicted_vs_true(scored.truth, scored.predicted, folder / "predicted_vs_true.png")
    state = "calibrated" if scored.calibration is not None else "uncalibrated"
    plot_coverage(intervals, folder / "coverage.png", f"{model} ({state}) on {csv}")
    if result.get("groups"):
        plot_groups(result["groups"], folder / "groups.png", model)
