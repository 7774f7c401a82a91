"""The age distribution behind CORAL's rank probabilities: per-age probabilities, median, central intervals and
their split-conformal calibration. NumPy only (no TensorFlow), shared by the trainer, the service and ``age-demo``.

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

Calibration is split-conformal (Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005; Lei et
al., JASA 2018; Angelopoulos & Bates, "A gentle introduction to conformal prediction", arXiv:2107.07511): with the
scores ``s_1 <= ... <= s_n`` of n labelled faces not used for training, the interval at ``tau = s_(ceil((n+1)c))``
covers a new exchangeable face's true age with probability at least ``c`` (at most ``c + 1/(n+1)`` without ties),
for any requested coverage ``c`` in (0, 1); ``ceil((n+1)c) > n`` gives the whole label range. Keeping the sorted
scores serves every ``c``. The width still follows the face: ``tau`` is shared, each face's distribution is its own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "CALIBRATION_KEY",
    "Calibration",
    "age_probas",
    "central_interval",
    "conformity_scores",
    "interval_mass",
    "interval_report",
    "median_rank",
    "p_at_least",
]

CALIBRATION_KEY = "calibration"
"""The model metadata key holding ``Calibration.to_metadata()``."""

_DECIMALS = 6


def _rank_probas(probas: Any) -> np.ndarray:
    values = np.asarray(probas, dtype=np.float64)
    return values.reshape(1, -1) if values.ndim == 1 else values


def age_probas(probas: Any) -> np.ndarray:
    """``P(rank = j)`` ``(N, K)`` float64 from the rank probabilities ``(N, K-1)``; each row sums to 1."""
    p = _rank_probas(probas)
    ones, zeros = np.ones((len(p), 1)), np.zeros((len(p), 1))
    return np.concatenate([ones, p], axis=1) - np.concatenate([p, zeros], axis=1)


def median_rank(probas: Any) -> np.ndarray:
    """The median rank ``(N,)`` int64: the smallest ``j`` with ``P(rank <= j) >= 1/2``, i.e. ``#{k: p_k > 1/2}``."""
    return (_rank_probas(probas) > 0.5).sum(axis=1).astype(np.int64)


def central_interval(probas: Any, mass: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` ranks ``(N,)`` int64, inclusive, of the central interval holding at least ``mass`` (scalar or
    ``(N,)``, in [0, 1]) of each row's distribution; see the module docstring."""
    p = _rank_probas(probas)
    tail = (1.0 - np.clip(np.asarray(mass, dtype=np.float64), 0.0, 1.0)) / 2.0
    tail = np.broadcast_to(tail, (len(p),))[:, None]
    low = (p > 1.0 - tail).sum(axis=1)
    high = (p >= tail).sum(axis=1)
    return low.astype(np.int64), high.astype(np.int64)


def conformity_scores(probas: Any, ranks: Any) -> np.ndarray:
    """``s = 1 - 2 min(P(rank <= y), P(rank >= y))`` ``(N,)`` in [0, 1] for true ranks ``y`` ``(N,)`` in ``0..K-1``.

    ``y`` lies in ``central_interval(probas, tau)`` exactly when ``tau >= s``.
    """
    p = _rank_probas(probas)
    y = np.asarray(ranks, dtype=np.int64).reshape(-1)
    padded = np.concatenate([np.ones((len(p), 1)), p, np.zeros((len(p), 1))], axis=1)
    rows = np.arange(len(p))
    at_least = padded[rows, y]  # P(rank >= y) = p_{y-1}
    at_most = 1.0 - padded[rows, y + 1]  # P(rank <= y) = 1 - p_y
    return np.clip(1.0 - 2.0 * np.minimum(at_least, at_most), 0.0, 1.0)


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


@dataclass(frozen=True)
class Calibration:
    """Sorted split-conformal scores ``(n,)`` of a calibration set, and where they came from.

    ``mass(c)`` is the central-interval mass that gives coverage ``c``; stored in model metadata under
    ``CALIBRATION_KEY`` as ``{"method", "scores", "n", "source", "outside_range"}``.
    """

    scores: np.ndarray
    source: str = ""
    outside_range: int = 0

    METHOD = "split-conformal, central-interval score 1 - 2 min(P(age <= y), P(age >= y))"

    @classmethod
    def fit(cls, probas: Any, ranks: Any, source: str = "", outside_range: int = 0) -> Calibration:
        """Calibrate on rank probabilities ``(n, K-1)`` and true ranks ``(n,)`` of faces the model was not fitted on."""
        scores = conformity_scores(probas, ranks)
        if scores.size == 0:
            raise ValueError("calibration needs at least one labelled face")
        # Rounded up, so the stored scores never make an interval narrower than the exact ones would.
        scale = 10.0**_DECIMALS
        return cls(np.minimum(np.ceil(np.sort(scores) * scale) / scale, 1.0), source, outside_range)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def mass(self, coverage: float) -> float:
        """The mass ``tau`` whose central intervals cover at least ``coverage`` (in (0, 1)) of new faces."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must lie in (0, 1) (got {coverage})")
        rank = math.ceil((self.n + 1) * coverage - 1e-9)
        return 1.0 if rank > self.n else float(self.scores[rank - 1])

    def to_metadata(self) -> dict[str, Any]:
        return {
            "method": self.METHOD,
            "n": self.n,
            "scores": [round(float(s), _DECIMALS) for s in self.scores],
            "source": self.source,
            "outside_range": self.outside_range,
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Calibration | None:
        """The calibration stored in a model's metadata, or ``None`` when it has none (or an empty one)."""
        entry = metadata.get(CALIBRATION_KEY)
        if not isinstance(entry, dict) or not entry.get("scores"):
            return None
        scores = np.sort(np.clip(np.asarray(entry["scores"], dtype=np.float64), 0.0, 1.0))
        return cls(scores, str(entry.get("source", "")), int(entry.get("outside_range", 0)))


def interval_mass(calibration: Calibration | None, coverage: float) -> float:
    """The mass to ask of ``central_interval`` for ``coverage``: calibrated, or the raw ``coverage`` itself."""
    return coverage if calibration is None else calibration.mass(coverage)


def interval_report(
    probas: Any, ranks: Any, calibration: Calibration | None, coverages: Sequence[float] = (0.5, 0.8, 0.9, 0.95)
) -> dict[str, dict[str, float | None]]:
    """Empirical ``coverage`` and ``mean_width`` (years, ``high - low``) at each requested coverage, keyed ``"0.9"``."""
    y = np.asarray(ranks, dtype=np.int64).reshape(-1)
    report: dict[str, dict[str, float | None]] = {}
    for coverage in coverages:
        if y.size == 0:
            report[str(coverage)] = {"coverage": None, "mean_width": None}
            continue
        low, high = central_interval(probas, interval_mass(calibration, coverage))
        report[str(coverage)] = {
            "coverage": round(float(((low <= y) & (y <= high)).mean()), 4),
            "mean_width": round(float((high - low).mean()), 3),
        }
    return report
