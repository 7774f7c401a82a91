"""core.distribution: age probabilities, median, central intervals and split-conformal coverage, on tiny tensors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.coral import probas_from_logits
from core.distribution import (
    Calibration,
    age_probas,
    central_interval,
    conformity_scores,
    interval_report,
    p_at_least,
    predicted_ranks,
)

finite = st.floats(-30, 30, allow_nan=False, width=32)


@st.composite
def head_logits(draw: st.DrawFn) -> np.ndarray:
    """Logits the CoralLayer head can produce: ``g(x) + b_k`` with one projection per face, ordered biases."""
    k = draw(st.integers(1, 40))
    biases = np.sort(draw(arrays(np.float32, k, elements=finite)))[::-1]
    projections = draw(arrays(np.float32, draw(st.integers(1, 5)), elements=finite))
    return (projections[:, None] + biases[None, :]).astype(np.float32)


@settings(max_examples=200, deadline=None)
@given(head_logits())
def test_age_probabilities_are_a_distribution_for_any_head_output(logits: np.ndarray) -> None:
    probas = age_probas(probas_from_logits(logits))
    assert probas.shape == (logits.shape[0], logits.shape[1] + 1)
    assert (probas >= 0).all()
    np.testing.assert_allclose(probas.sum(axis=1), 1.0, atol=1e-9)


@settings(max_examples=200, deadline=None)
@given(head_logits(), st.floats(0, 1), st.floats(0, 1))
def test_intervals_are_nested_hold_their_mass_and_contain_the_median(logits: np.ndarray, a: float, b: float) -> None:
    p = probas_from_logits(logits)
    small, large = sorted((a, b))
    low_s, high_s = central_interval(p, small)
    low_l, high_l = central_interval(p, large)
    assert ((low_l <= low_s) & (high_s <= high_l)).all()
    median = predicted_ranks(p)
    assert ((low_s <= median) & (median <= high_s)).all()
    masses = age_probas(p)
    for row, lo, hi in zip(masses, low_l, high_l, strict=True):
        assert row[lo : hi + 1].sum() >= large - 1e-6


@settings(max_examples=200, deadline=None)
@given(head_logits(), st.data())
def test_a_rank_is_inside_exactly_from_its_score_on(logits: np.ndarray, data: st.DataObject) -> None:
    p = probas_from_logits(logits)
    ranks = np.array([data.draw(st.integers(0, p.shape[1])) for _ in range(len(p))])
    scores = conformity_scores(p, ranks)
    # A margin far below the stored scores' 1e-6 steps: 1 - (1 - 2p) loses the digits of a tail p near 1e-10.
    for mass, inside in ((np.clip(scores + 1e-9, 0, 1), True), (np.clip(scores - 1e-3, 0, 1), False)):
        low, high = central_interval(p, mass)
        covered = (low <= ranks) & (ranks <= high)
        assert covered.all() if inside else not covered[scores >= 1e-3].any()


def test_by_hand_three_ranks() -> None:
    p = np.array([[0.8, 0.3]])  # P(0)=0.2, P(1)=0.5, P(2)=0.3
    np.testing.assert_allclose(age_probas(p), [[0.2, 0.5, 0.3]])
    assert predicted_ranks(p).tolist() == [1]
    assert central_interval(p, 0.0) == ([1], [1])
    assert central_interval(p, 0.5) == ([1], [2])  # tails 0.25: drop rank 0 (0.2), keep rank 2 (0.3)
    assert central_interval(p, 1.0) == ([0], [2])
    np.testing.assert_allclose(conformity_scores(np.repeat(p, 3, 0), [0, 1, 2]), [0.6, 0.0, 0.4])


def test_p_at_least_inside_and_outside_the_label_range() -> None:
    raw = [0.9, 0.6, 0.2]  # ranks 0..3 = ages 10..13
    assert [p_at_least(raw, age, 10) for age in (9, 10, 11, 12, 13, 14)] == [1.0, 1.0, 0.9, 0.6, 0.2, 0.0]


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
    young = predicted_ranks(new_probas) < 10
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
    from core.distribution import decade_report

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
