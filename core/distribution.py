"""The age distribution behind CORAL's rank probabilities: per-age probabilities, the predicted rank, central
intervals. NumPy only (no TensorFlow), shared by the trainer, the service, ``age-demo`` and ``age-batch``; their
calibration is :mod:`core.calibration`.

CORAL (Cao, Mirjalili & Raschka 2020, arXiv:1901.07884) outputs ``p_k = P(rank > k)`` for ``k = 0..K-2``; rank
consistency (ordered biases, Theorem 1) makes ``p`` non-increasing, so ``1 - p`` is a cumulative distribution
over the K ranks and ``P(rank = j) = p_{j-1} - p_j`` (with ``p_{-1} = 1``, ``p_{K-1} = 0``) is never negative.
Ranks are ``age - start_label``; every array here is in ranks, shapes ``(N, K-1)`` in and ``(N,)`` or ``(N, K)`` out.

Intervals. For a mass ``tau`` in [0, 1] and tail ``a = (1 - tau) / 2`` the central interval is
``low = #{k: p_k > 1 - a}``, ``high = #{k: p_k >= a}``: the shortest interval from the median outwards that leaves
at most ``a`` of the mass on each side, so it holds at least ``tau``. It grows with ``tau`` (nested) and contains
the true rank ``y`` exactly when ``tau >= s(y)``, with the conformity score
``s(y) = 1 - 2 min(P(rank <= y), P(rank >= y))``: the distributional conformal score ``|F(y) - 1/2|`` of
Chernozhukov, Wuethrich & Zhu, "Distributional conformal prediction", PNAS 118 (2021), for a discrete ``F``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "REPORTED_COVERAGES",
    "age_probas",
    "as_rank_probas",
    "central_interval",
    "labels_from_probas",
    "p_at_least",
    "probas_from_logits",
]

REPORTED_COVERAGES = (0.5, 0.8, 0.9, 0.95)
"""The coverages that reports (``metrics.json``, ``age-calibrate``, ``GET /model``) show intervals at."""


def probas_from_logits(logits: Any) -> np.ndarray:
    """Task probabilities ``P(y > k) = sigmoid(logit_k)``, ``(N, K-1)`` float32, computed stably for large |x|."""
    logits = np.asarray(logits, dtype="float64")
    out = np.empty_like(logits)
    positive = logits >= 0
    out[positive] = 1.0 / (1.0 + np.exp(-logits[positive]))
    exp_x = np.exp(logits[~positive])
    out[~positive] = exp_x / (1.0 + exp_x)
    return out.astype("float32")


def labels_from_probas(probas: Any, threshold: float = 0.5) -> np.ndarray:
    """Predicted rank ``(N,)`` int64: the number of task probabilities strictly above ``threshold`` (paper, Eq. 1)."""
    return (np.asarray(probas) > threshold).sum(axis=-1).astype("int64")


def as_rank_probas(probas: Any) -> np.ndarray:
    """Rank probabilities as a float64 ``(N, K-1)`` array (one row for a single face's ``(K-1,)``)."""
    values = np.asarray(probas, dtype=np.float64)
    return values.reshape(1, -1) if values.ndim == 1 else values


def age_probas(probas: Any) -> np.ndarray:
    """``P(rank = j)`` ``(N, K)`` float64 from the rank probabilities ``(N, K-1)``; each row sums to 1."""
    p = as_rank_probas(probas)
    ones, zeros = np.ones((len(p), 1)), np.zeros((len(p), 1))
    return np.concatenate([ones, p], axis=1) - np.concatenate([p, zeros], axis=1)


def central_interval(probas: Any, mass: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` ranks ``(N,)`` int64, inclusive, of the central interval holding at least ``mass`` (scalar or
    ``(N,)``, in [0, 1]) of each row's distribution; see the module docstring."""
    p = as_rank_probas(probas)
    tail = (1.0 - np.clip(np.asarray(mass, dtype=np.float64), 0.0, 1.0)) / 2.0
    tail = np.broadcast_to(tail, (len(p),))[:, None]
    low = (p > 1.0 - tail).sum(axis=1)
    high = (p >= tail).sum(axis=1)
    return low.astype(np.int64), high.astype(np.int64)


def p_at_least(raw_probas: Sequence[float] | np.ndarray, min_age: int, start_label: int) -> float:
    """``P(age >= min_age)`` of one face: ``raw_probas[min_age - start_label - 1]`` inside the label range.

    At or below ``start_label`` it is 1 (every rank is at least the first age); above the last age
    (``start_label + K - 1``) it is 0, since the model gives no mass beyond its range.
    """
    index = int(min_age) - int(start_label) - 1
    if index < 0:
        return 1.0
    if index >= len(raw_probas):
        return 0.0
    return float(raw_probas[index])
