"""``age-robustness --model FILE.h5 --csv FILE --images DIR``: how a model holds up on degraded copies of its chips.

Scores the model on the aligned chips the CSV lists (``Path``, ``Age``; as ``age-align`` writes them, or a run's
``val.csv`` / ``test.csv`` with ``--images /``) and on fixed copies of them (``trainer.data.augmentation.DEGRADATIONS``:
greyscale, blurred, JPEG at quality 20, a face downscaled to 40 px), and prints one JSON object: for each copy
``mae``, ``rmse``, ``cs5``, ``n``, ``mae_per_decade`` and ``mae_delta``, the MAE it adds over the clean chips.
Select models on a validation split's copies, never on the held-out split's. ``--out FILE`` also writes the JSON.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from core.errors import AgeEstimationError

__all__ = ["robustness_scores"]


def robustness_scores(model_path: Path, csv_path: Path, images: Path, batch_size: int = 64) -> dict[str, Any]:
    """``{"clean": metrics, "<degradation>": metrics | {"mae_delta": ...}}`` for the chips of ``csv_path``."""
    import numpy as np
    import tensorflow as tf

    from core.artifact import load_model, read_metadata
    from trainer.data.augmentation import DEGRADATIONS, degrade
    from trainer.data.labels import read_age_csv
    from trainer.evaluation.metrics import age_metrics
    from trainer.evaluation.scoring import aligned_batches, predict_batches

    meta = read_metadata(model_path)
    model = load_model(model_path)
    table = read_age_csv(csv_path, images)
    batches, usable, missing = aligned_batches(table, int(meta["img_size"]), batch_size)
    if usable == 0:
        raise AgeEstimationError(f"--csv {csv_path}: none of its {len(table)} chips exist under {images}")
    ages = table["Age"].to_numpy(dtype=np.float64)
    results: dict[str, Any] = {"n_missing": missing}
    for name in ("clean", *DEGRADATIONS):
        data = batches if name == "clean" else batches.unbatch().map(lambda x, y, n=name: (degrade(x, n), y))
        if name != "clean":
            data = data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        rows, predicted = predict_batches(model, data, int(meta["start_label"]), float(meta["threshold"]))
        results[name] = age_metrics(ages[rows.astype(int)], predicted)
        if name != "clean":
            results[name]["mae_delta"] = round(results[name]["mae"] - results["clean"]["mae"], 4)
        print(f"{name}: MAE {results[name]['mae']}", file=sys.stderr)
    return results
