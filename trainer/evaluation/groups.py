"""Scores broken down by the columns of a labelled CSV (``age-evaluate --groups``).

``group_metrics`` gives, for every value of each column (UTKFace's ``Gender``, ``Race``, ...), the MAE and RMSE
in years, the share of true ages inside the interval (``coverage``) and the number of faces ``n``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd


def group_metrics(
    table: pd.DataFrame, error: np.ndarray, covered: np.ndarray, columns: Sequence[str]
) -> dict[str, dict[str, dict[str, float | int]]]:
    """``{column: {value: {"mae", "rmse", "coverage", "n"}}}`` over the rows of ``table`` (one per scored face).

    ``error`` ``(N,)`` is predicted minus true age (years), ``covered`` ``(N,)`` whether the interval held the true
    age. Values are keyed by their text; a missing value is ``"(missing)"``.
    """
    frame = pd.DataFrame({"abs": np.abs(error), "sq": np.square(error), "covered": covered.astype(float)})
    groups: dict[str, dict[str, dict[str, float | int]]] = {}
    for column in columns:
        keys = table[column].astype("string").fillna("(missing)").to_numpy()
        cells: dict[str, dict[str, float | int]] = {}
        for value, part in frame.groupby(keys, sort=True):
            cells[str(value)] = {
                "mae": round(float(part["abs"].mean()), 4),
                "rmse": round(float(np.sqrt(part["sq"].mean())), 4),
                "coverage": round(float(part["covered"].mean()), 4),
                "n": len(part),
            }
        groups[column] = cells
    return groups
