"""core.distribution: age probabilities, the predicted rank and central intervals, on tiny tensors."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from core.calibration import conformity_scores
from core.coral import probas_from_logits
from core.distribution import age_probas, central_interval, labels_from_probas, p_at_least

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
    median = labels_from_probas(p)
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
    assert labels_from_probas(p).tolist() == [1]
    assert central_interval(p, 0.0) == ([1], [1])
    assert central_interval(p, 0.5) == ([1], [2])  # tails 0.25: drop rank 0 (0.2), keep rank 2 (0.3)
    assert central_interval(p, 1.0) == ([0], [2])
    np.testing.assert_allclose(conformity_scores(np.repeat(p, 3, 0), [0, 1, 2]), [0.6, 0.0, 0.4])


def test_p_at_least_inside_and_outside_the_label_range() -> None:
    raw = [0.9, 0.6, 0.2]  # ranks 0..3 = ages 10..13
    assert [p_at_least(raw, age, 10) for age in (9, 10, 11, 12, 13, 14)] == [1.0, 1.0, 0.9, 0.6, 0.2, 0.0]
