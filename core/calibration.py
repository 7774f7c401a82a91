"""Calibrated age intervals: split-conformal, per group of predicted age (Mondrian), fitted by the trainer and
applied by the service, ``age-demo``, ``age-evaluate`` and ``age-batch`` to the central intervals of
:mod:`core.distribution`. NumPy only (no TensorFlow).

Calibration is split-conformal (Vovk, Gammerman & Shafer, "Algorithmic Learning in a Random World", 2005; Lei et
al., JASA 2018; Angelopoulos & Bates, "A gentle introduction to conformal prediction", arXiv:2107.07511): with the
scores ``s_1 <= ... <= s_n`` of n labelled faces not used for training, the interval at ``tau = s_(ceil((n+1)c))``
covers a new exchangeable face's true age with probability at least ``c`` (at most ``c + 1/(n+1)`` without ties),
for any requested coverage ``c`` in (0, 1); ``ceil((n+1)c) > n`` gives the whole label range. Keeping the sorted
scores serves every ``c``. The width still follows the face: ``tau`` is shared, each face's distribution is its own.

Age-conditional (Mondrian) calibration. One ``tau`` for everyone covers ``c`` on average but not for every age: a
model's distributions are too narrow for small children (one year of age is a large change at 3) and too wide for
young adults. Mondrian conformal prediction (Vovk et al. 2005, ch. 4; Vovk, "Conditional validity of inductive
conformal predictors", ACML 2012) calibrates each group of a partition separately, and the guarantee then holds in
every group: ``P(y in interval | group) >= c``. The group must be known at prediction time, so faces are grouped by
their *predicted* age (the median rank), in decades; a group with fewer than ``MIN_GROUP`` calibration faces is
merged into its neighbour, so no group's ``tau`` rests on a handful of faces. Every group covers at least ``c``, so
the mixture does too: the marginal guarantee stays.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.distribution import REPORTED_COVERAGES, as_rank_probas, central_interval, labels_from_probas

__all__ = [
    "CALIBRATION_KEY",
    "DECADE_EDGES",
    "MIN_GROUP",
    "AgeGroup",
    "Calibration",
    "conformity_scores",
    "decade_edges",
    "decade_report",
    "interval_mass",
    "interval_report",
]

CALIBRATION_KEY = "calibration"
"""The model metadata key holding ``Calibration.to_metadata()``."""

_DECIMALS = 6
_OPEN_END = int(np.iinfo(np.int32).max) - 1
"""The last Mondrian group's upper rank: it has no upper end."""
MIN_GROUP = 60
"""The fewest calibration faces a Mondrian group may hold; smaller groups are merged into their neighbour."""
DECADE_EDGES = (10, 20, 30, 40, 50, 60, 70)
"""Ages (years) where a new predicted-age group starts: 0-9, 10-19, ..., 60-69, 70+."""


def conformity_scores(probas: Any, ranks: Any) -> np.ndarray:
    """``s = 1 - 2 min(P(rank <= y), P(rank >= y))`` ``(N,)`` in [0, 1] for true ranks ``y`` ``(N,)`` in ``0..K-1``.

    ``y`` lies in ``central_interval(probas, tau)`` exactly when ``tau >= s``.
    """
    p = as_rank_probas(probas)
    y = np.asarray(ranks, dtype=np.int64).reshape(-1)
    padded = np.concatenate([np.ones((len(p), 1)), p, np.zeros((len(p), 1))], axis=1)
    rows = np.arange(len(p))
    at_least = padded[rows, y]  # P(rank >= y) = p_{y-1}
    at_most = 1.0 - padded[rows, y + 1]  # P(rank <= y) = 1 - p_y
    return np.clip(1.0 - 2.0 * np.minimum(at_least, at_most), 0.0, 1.0)


@dataclass(frozen=True)
class Calibration:
    """Sorted split-conformal scores ``(n,)`` of a calibration set, and where they came from.

    ``mass(c)`` is the central-interval mass that gives coverage ``c``; stored in model metadata under
    ``CALIBRATION_KEY`` as ``{"method", "scores", "n", "source", "outside_range"}``.
    """

    scores: np.ndarray
    source: str = ""
    outside_range: int = 0
    groups: tuple[AgeGroup, ...] = ()

    METHOD = "split-conformal, central-interval score 1 - 2 min(P(age <= y), P(age >= y))"
    MONDRIAN = "Mondrian by predicted age (decades of the median rank), each group split-conformal"

    @classmethod
    def fit(
        cls,
        probas: Any,
        ranks: Any,
        source: str = "",
        outside_range: int = 0,
        group_edges: Sequence[int] | None = None,
    ) -> Calibration:
        """Calibrate on rank probabilities ``(n, K-1)`` and true ranks ``(n,)`` of faces the model was not fitted on.

        ``group_edges``: predicted ranks (ascending) where a new Mondrian group starts, e.g. the decades of
        :data:`DECADE_EDGES` less ``start_label``; ``None`` fits the marginal calibration alone.
        """
        scores = conformity_scores(probas, ranks)
        if scores.size == 0:
            raise ValueError("calibration needs at least one labelled face")
        groups: tuple[AgeGroup, ...] = ()
        if group_edges is not None:
            groups = _fit_groups(scores, labels_from_probas(probas), group_edges)
        return cls(_stored(scores), source, outside_range, groups)

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def mass(self, coverage: float) -> float:
        """The mass ``tau`` whose central intervals cover at least ``coverage`` (in (0, 1)) of new faces."""
        return _conformal_mass(self.scores, coverage)

    def masses(self, coverage: float, probas: Any) -> float | np.ndarray:
        """Per-face masses ``(N,)`` for rank probabilities ``(N, K-1)``: each face's Mondrian group's ``tau``
        (the marginal one, a float, when the calibration has no groups)."""
        if not self.groups:
            return self.mass(coverage)
        predicted = labels_from_probas(probas)
        out = np.empty(len(predicted), dtype=np.float64)
        for group in self.groups:
            inside = (predicted >= group.low) & (predicted <= group.high)
            out[inside] = _conformal_mass(group.scores, coverage)
        return out

    def to_metadata(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "method": self.MONDRIAN if self.groups else self.METHOD,
            "n": self.n,
            "scores": _rounded(self.scores),
            "source": self.source,
            "outside_range": self.outside_range,
        }
        if self.groups:
            entry["groups"] = [group.to_metadata() for group in self.groups]
        return entry

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any]) -> Calibration | None:
        """The calibration stored in a model's metadata, or ``None`` when it has none (or an empty one)."""
        entry = metadata.get(CALIBRATION_KEY)
        if not isinstance(entry, dict) or not entry.get("scores"):
            return None
        groups = tuple(AgeGroup.from_metadata(group) for group in entry.get("groups") or ())
        return cls(
            _sorted_scores(entry["scores"]), str(entry.get("source", "")), int(entry.get("outside_range", 0)), groups
        )


@dataclass(frozen=True)
class AgeGroup:
    """One Mondrian group: faces whose predicted rank lies in ``low..high`` (inclusive) and their sorted scores."""

    low: int
    high: int
    scores: np.ndarray

    @property
    def n(self) -> int:
        return int(self.scores.size)

    def to_metadata(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "n": self.n, "scores": _rounded(self.scores)}

    def summary(self, start_label: int, coverages: Sequence[float]) -> dict[str, Any]:
        """The group as reports show it: ``predicted_ages`` ``[first, last]`` in years (``last`` ``None`` for the
        open top group), its size ``n`` and its ``interval_mass`` for each of ``coverages``."""
        last = None if self.high >= _OPEN_END else self.high + int(start_label)
        return {
            "predicted_ages": [self.low + int(start_label), last],
            "n": self.n,
            "interval_mass": {str(c): _conformal_mass(self.scores, c) for c in coverages},
        }

    @classmethod
    def from_metadata(cls, entry: dict[str, Any]) -> AgeGroup:
        return cls(int(entry["low"]), int(entry["high"]), _sorted_scores(entry["scores"]))


def _stored(scores: np.ndarray) -> np.ndarray:
    # Rounded up, so the stored scores never make an interval narrower than the exact ones would.
    scale = 10.0**_DECIMALS
    return np.minimum(np.ceil(np.sort(scores) * scale) / scale, 1.0)


def _rounded(scores: np.ndarray) -> list[float]:
    return [round(float(s), _DECIMALS) for s in scores]


def _sorted_scores(values: Any) -> np.ndarray:
    return np.sort(np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0))


def _conformal_mass(scores: np.ndarray, coverage: float) -> float:
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must lie in (0, 1) (got {coverage})")
    n = int(scores.size)
    rank = math.ceil((n + 1) * coverage - 1e-9)
    return 1.0 if rank > n else float(scores[rank - 1])


def _fit_groups(scores: np.ndarray, predicted: np.ndarray, edges: Sequence[int]) -> tuple[AgeGroup, ...]:
    """Split faces at ``edges`` by predicted rank, merge groups under ``MIN_GROUP`` faces into a neighbour (the
    later one, the last into the one before), and cover every rank from 0 up."""
    bounds = [0, *sorted({int(e) for e in edges if int(e) > 0})]
    spans = [[low, high] for low, high in zip(bounds, [*(b - 1 for b in bounds[1:]), _OPEN_END], strict=True)]
    counts = [int(((predicted >= low) & (predicted <= high)).sum()) for low, high in spans]
    i = 0
    while len(spans) > 1 and i < len(spans):
        if counts[i] >= MIN_GROUP:
            i += 1
            continue
        j = i + 1 if i + 1 < len(spans) else i - 1
        first, second = min(i, j), max(i, j)
        spans[first : second + 1] = [[spans[first][0], spans[second][1]]]
        counts[first : second + 1] = [counts[first] + counts[second]]
        i = first
    return tuple(AgeGroup(low, high, _stored(scores[(predicted >= low) & (predicted <= high)])) for low, high in spans)


def decade_edges(start_label: int) -> list[int]:
    """:data:`DECADE_EDGES` as rank edges for a model whose first age is ``start_label``."""
    return [age - int(start_label) for age in DECADE_EDGES if age > start_label]


def interval_mass(calibration: Calibration | None, coverage: float, probas: Any = None) -> float | np.ndarray:
    """The mass to ask of ``central_interval`` for ``coverage``: calibrated (per face, by Mondrian group, when the
    calibration has groups and ``probas`` ``(N, K-1)`` are given), or the raw ``coverage`` itself."""
    if calibration is None:
        return coverage
    return calibration.mass(coverage) if probas is None else calibration.masses(coverage, probas)


def interval_report(
    probas: Any, ranks: Any, calibration: Calibration | None, coverages: Sequence[float] = REPORTED_COVERAGES
) -> dict[str, dict[str, float | None]]:
    """Empirical ``coverage`` and ``mean_width`` (years, ``high - low``) at each requested coverage, keyed ``"0.9"``."""
    y = np.asarray(ranks, dtype=np.int64).reshape(-1)
    report: dict[str, dict[str, float | None]] = {}
    for coverage in coverages:
        if y.size == 0:
            report[str(coverage)] = {"coverage": None, "mean_width": None}
            continue
        low, high = central_interval(probas, interval_mass(calibration, coverage, probas))
        report[str(coverage)] = {
            "coverage": round(float(((low <= y) & (y <= high)).mean()), 4),
            "mean_width": round(float((high - low).mean()), 3),
        }
    return report


def decade_report(
    probas: Any, ranks: Any, calibration: Calibration | None, start_label: int, coverage: float = 0.9
) -> dict[str, dict[str, float | int | None]]:
    """Coverage and mean width (years) at ``coverage`` for each decade of TRUE age (``"0-9"`` ... ``"70+"``), with
    the number of faces ``n``: how well the interval holds for each age, not only on average."""
    y = np.asarray(ranks, dtype=np.int64).reshape(-1)
    p = as_rank_probas(probas)
    if y.size:
        low, high = central_interval(p, interval_mass(calibration, coverage, p))
        hit, width = (low <= y) & (y <= high), high - low
    ages = y + int(start_label)
    starts = [0, *DECADE_EDGES]
    report: dict[str, dict[str, float | int | None]] = {}
    for first, stop in zip(starts, [*starts[1:], None], strict=True):
        name = f"{first}+" if stop is None else f"{first}-{stop - 1}"
        inside = (ages >= first) & (ages < (stop if stop is not None else np.iinfo(np.int64).max))
        n = int(inside.sum())
        report[name] = {
            "n": n,
            "coverage": round(float(hit[inside].mean()), 4) if n else None,
            "mean_width": round(float(width[inside].mean()), 3) if n else None,
        }
    return report
