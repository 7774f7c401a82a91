"""core.calibration: split-conformal and age-conditional (Mondrian) calibration, on tiny synthetic tensors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.calibration import Calibration, decade_report, interval_report
from core.coral import probas_from_logits
from core.distribution import central_interval, labels_from_probas


def test_calibration_covers_at_least_the_requested_share_of_exchangeable_faces() -> None:
    """A deliberately overconfident model: raw 90% intervals cover far less, calibrated ones at least 90%."""
    rng = np.random.default_rng(0)
    k, n = 30, 4000
    centre = rng.uniform(5, 25, n)
    truth = np.clip(np.round(centre + rng.normal(0, 3, n)), 0, k - 1).astype(int)
    logits = 2.0 * (centre[:, None] - np.arange(k - 1)[None, :] - 0.5)  # spread 0.5: far too sure
    p = probas_from_logits(logits)
    calibration = Calibration.fit(p[: n // 2], truth[: n // 2], source="half")
    raw = interval_report(p[n // 2 :], truth[n // 2 :], None)
    calibrated = interval_report(p[n // 2 :], truth[n // 2 :], calibration)
    assert raw["0.9"]["coverage"] < 0.7
    for coverage in ("0.5", "0.8", "0.9", "0.95"):
        assert calibrated[coverage]["coverage"] == pytest.approx(float(coverage), abs=0.03)
    assert calibrated["0.9"]["mean_width"] > raw["0.9"]["mean_width"]


def test_calibration_round_trips_through_metadata_and_serves_any_coverage() -> None:
    calibration = Calibration.fit(np.array([[0.8, 0.3]] * 3), [0, 1, 2], source="val.csv", outside_range=2)
    back = Calibration.from_metadata({"calibration": calibration.to_metadata()})
    assert back is not None
    np.testing.assert_allclose(back.scores, calibration.scores)
    assert (back.n, back.source, back.outside_range) == (3, "val.csv", 2)
    assert back.mass(0.5) == pytest.approx(0.4)  # ceil(4 * 0.5) = 2nd smallest of 0, 0.4, 0.6
    assert back.mass(0.8) == 1.0  # ceil(4 * 0.8) = 4 > n: the whole range
    assert Calibration.from_metadata({}) is None
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match="coverage"):
            back.mass(bad)


def _two_populations(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Faces predicted at rank 5 whose model is honest (true rank within ±1) and faces predicted at rank 30
    whose model is overconfident (the same narrow distribution, true rank spread ±6): one shared ``tau`` cannot
    serve both groups."""
    rng = np.random.default_rng(seed)
    k = 60
    ranks_all = np.arange(k - 1)
    rows, truth = [], []
    for i in range(n):
        centre, spread = (5, 1) if i % 2 == 0 else (30, 6)
        rows.append(1.0 / (1.0 + np.exp(-(centre + 0.5 - ranks_all) * 2.0)))
        truth.append(centre + rng.integers(-spread, spread + 1))
    return np.array(rows), np.array(truth)


def test_mondrian_groups_cover_where_one_shared_tau_does_not() -> None:
    edges = [10, 20, 40]
    probas, ranks = _two_populations(600, seed=0)
    new_probas, new_ranks = _two_populations(2000, seed=1)
    marginal = Calibration.fit(probas, ranks)
    mondrian = Calibration.fit(probas, ranks, group_edges=edges)
    assert next((g.low, g.high) for g in mondrian.groups)[0] == 0
    young = labels_from_probas(new_probas) < 10
    for calibration, covers_old in ((marginal, False), (mondrian, True)):
        low, high = central_interval(new_probas, calibration.masses(0.9, new_probas))
        hit = (low <= new_ranks) & (new_ranks <= high)
        assert hit[young].mean() >= 0.9
        assert bool(hit[~young].mean() >= 0.88) is covers_old
    # The groups' guarantee implies the marginal one.
    low, high = central_interval(new_probas, mondrian.masses(0.9, new_probas))
    assert ((low <= new_ranks) & (new_ranks <= high)).mean() >= 0.88


def test_small_mondrian_groups_merge_into_a_neighbour_and_cover_every_rank() -> None:
    probas, ranks = _two_populations(200, seed=2)  # 100 faces predicted at 5, 100 at 30, none elsewhere
    calibration = Calibration.fit(probas, ranks, group_edges=[10, 20, 40, 50])
    spans = [(g.low, g.high) for g in calibration.groups]
    assert spans[0][0] == 0
    assert all(g.n >= 60 for g in calibration.groups)
    assert all(a[1] + 1 == b[0] for a, b in itertools.pairwise(spans))
    assert sum(g.n for g in calibration.groups) == calibration.n


def test_mondrian_calibration_round_trips_through_metadata_and_old_metadata_still_loads() -> None:
    probas, ranks = _two_populations(300, seed=3)
    calibration = Calibration.fit(probas, ranks, source="val", group_edges=[10, 20])
    entry = calibration.to_metadata()
    assert entry["method"] == Calibration.MONDRIAN
    loaded = Calibration.from_metadata({"calibration": entry})
    assert loaded is not None
    np.testing.assert_allclose(loaded.masses(0.9, probas), calibration.masses(0.9, probas))
    entry.pop("groups")
    marginal = Calibration.from_metadata({"calibration": entry})
    assert marginal is not None
    assert marginal.groups == ()
    assert marginal.masses(0.9, probas) == marginal.mass(0.9)


def test_decade_report_counts_true_ages_by_decade() -> None:
    probas, ranks = _two_populations(100, seed=4)
    report = decade_report(probas, ranks, None, start_label=1)
    assert list(report) == ["0-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
    assert sum(entry["n"] for entry in report.values()) == 100
    assert report["70+"] == {"n": 0, "coverage": None, "mean_width": None}


def test_group_summary_names_ages_in_years_and_leaves_the_top_group_open() -> None:
    probas, ranks = _two_populations(300, seed=5)
    calibration = Calibration.fit(probas, ranks, group_edges=[10, 20])
    first, last = calibration.groups[0], calibration.groups[-1]
    assert first.summary(1, (0.9,))["predicted_ages"] == [1, first.high + 1]
    assert last.summary(1, (0.9,))["predicted_ages"][1] is None
    assert last.summary(1, (0.9,))["interval_mass"]["0.9"] == Calibration(last.scores).mass(0.9)
