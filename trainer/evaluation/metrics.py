"""Age metrics: in Keras for training (``AgeMAE``, ``AgeRMSE``, on CORAL logits) and in NumPy for reports
(``age_metrics``: MAE, RMSE, CS@5, MAE per decade). Ages and errors are in years."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
from keras import ops


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
