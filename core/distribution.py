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

__all__ = [
    "CALIBRATION_KEY",
    "DECADE_EDGES",
    "REPORTED_COVERAGES",
    "AgeGroup",
    "Calibration",
    "age_probas",
    "central_interval",
    "conformity_scores",
    "decade_edges",
    "decade_report",
    "interval_mass",
    "interval_report",
    "labels_from_probas",
    "p_at_least",
    "predicted_ranks",
    "probas_from_logits",
]

CALIBRATION_KEY = "calibration"
"""The model metadata key holding ``Calibration.to_metadata()``."""

REPORTED_COVERAGES = (0.5, 0.8, 0.9, 0.95)
"""The coverages that reports (``metrics.json``, ``age-calibrate``, ``GET /model``) show intervals at."""

_DECIMALS = 6
MIN_GROUP = 60
"""The fewest calibration faces a Mondrian group may hold; smaller groups are merged into their neighbour."""
DECADE_EDGES = (10, 20, 30, 40, 50, 60, 70)
"""Ages (years) where a new predicted-age group starts: 0-9, 10-19, ..., 60-69, 70+."""


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


def _rank_probas(probas: Any) -> np.ndarray:
    values = np.asarray(probas, dtype=np.float64)
    return values.reshape(1, -1) if values.ndim == 1 else values


def age_probas(probas: Any) -> np.ndarray:
    """``P(rank = j)`` ``(N, K)`` float64 from the rank probabilities ``(N, K-1)``; each row sums to 1."""
    p = _rank_probas(probas)
    ones, zeros = np.ones((len(p), 1)), np.zeros((len(p), 1))
    return np.concatenate([ones, p], axis=1) - np.concatenate([p, zeros], axis=1)


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
            groups = _fit_groups(scores, predicted_ranks(probas), group_edges)
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
        predicted = predicted_ranks(probas)
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
        last = None if self.high >= np.iinfo(np.int32).max - 1 else self.high + int(start_label)
        return {
            "predicted_ages": [self.low + int(start_label), last],
            "n": self.n,
            "interval_mass": {str(c): _conformal_mass(self.scores, c) for c in coverages},
        }

    @classmethod
    def from_metadata(cls, entry: dict[str, Any]) -> AgeGroup:
        return cls(int(entry["low"]), int(entry["high"]), _sorted_scores(entry["scores"]))


def predicted_ranks(probas: Any) -> np.ndarray:
    """The median rank ``(N,)`` int64, ``#{k: p_k > 1/2}``: the rank that Mondrian groups are chosen by."""
    return (_rank_probas(probas) > 0.5).sum(axis=1).astype(np.int64)


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
    spans = [[low, high - 1] for low, high in zip(bounds, [*bounds[1:], np.iinfo(np.int32).max], strict=True)]
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
    p = _rank_probas(probas)
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
