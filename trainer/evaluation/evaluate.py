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

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from core.coral import labels_from_probas, probas_from_logits
from core.distribution import REPORTED_COVERAGES, Calibration, central_interval, interval_mass, interval_report
from trainer.data.labels import read_age_csv
from trainer.evaluation.metrics import age_metrics
from trainer.evaluation.scoring import image_batches, predict_logits


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
    low, high = central_interval(probas, interval_mass(calibration, coverage, probas))
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
        from trainer.evaluation.groups import group_metrics

        result["groups"] = group_metrics(scored, predicted - truth, covered, groups)
    if plots is not None:
        from trainer.evaluation.plots import write_evaluation_report

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
