"""CORAL math: levels, decoding, importance weights, the loss against a NumPy reference, rank consistency."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from core.coral import (
    CoralLayer,
    coral_loss,
    importance_weights,
    labels_from_probas,
    levels_from_labels,
    probas_from_logits,
)

finite = st.floats(-30, 30, allow_nan=False, width=32)


@given(st.integers(2, 40).flatmap(lambda k: st.tuples(st.just(k), st.lists(st.integers(0, k - 1), max_size=30))))
def test_levels_and_labels_are_inverse(case):
    num_classes, labels = case
    levels = levels_from_labels(labels, num_classes)
    assert levels.shape == (len(labels), num_classes - 1)
    assert np.array_equal(labels_from_probas(levels, threshold=0.5), np.asarray(labels, dtype="int64"))


def test_levels_of_a_known_label():
    assert levels_from_labels([2], 5).tolist() == [[1.0, 1.0, 0.0, 0.0]]


def test_levels_refuse_out_of_range_labels():
    with pytest.raises(ValueError, match=r"0\.\.4"):
        levels_from_labels([5], 5)


def test_labels_count_probas_strictly_above_threshold():
    probas = np.array([[0.9, 0.6, 0.5, 0.2], [0.4, 0.3, 0.2, 0.1]])
    assert labels_from_probas(probas).tolist() == [2, 0]
    assert labels_from_probas(probas, threshold=0.25).tolist() == [3, 2]


def test_importance_weights_hand_computed():
    # labels 0,1,1,3 with K=4: S_k = #(y > k) = [3, 1, 1]; N = 4; max(S, N - S) = [3, 3, 3] -> all equal.
    assert np.allclose(importance_weights([0, 1, 1, 3], 4), [1.0, 1.0, 1.0])
    # labels 0,0,0,2 with K=3: S = [1, 1] -> max = [3, 3]; labels 0,1,2,2: S = [3, 2] -> sqrt([3, 2]) / sqrt(3).
    assert np.allclose(importance_weights([0, 1, 2, 2], 3), [1.0, np.sqrt(2 / 3)])


def _reference_loss(logits, labels, weights):
    levels = levels_from_labels(labels, logits.shape[1] + 1)
    log_p = np.log(1 / (1 + np.exp(-logits.astype("float64"))))
    log_q = np.log(1 - 1 / (1 + np.exp(-logits.astype("float64"))))
    return float(np.mean(-np.sum(weights * (levels * log_p + (1 - levels) * log_q), axis=1)))


@settings(max_examples=30, deadline=None)
@given(
    st.integers(2, 12).flatmap(
        lambda k: st.tuples(
            hnp.arrays("float32", st.tuples(st.integers(1, 6), st.just(k - 1)), elements=finite),
            st.integers(0, 2**31 - 1),
        )
    )
)
def test_loss_matches_numpy_reference(case):
    logits, seed = case
    rng = np.random.default_rng(seed)
    num_classes = logits.shape[1] + 1
    labels = rng.integers(0, num_classes, size=len(logits))
    weights = rng.uniform(0.1, 1.0, size=num_classes - 1).astype("float32")
    got = float(coral_loss(weights)(labels, logits))
    assert got == pytest.approx(_reference_loss(logits, labels, weights), rel=1e-4, abs=1e-4)
    unweighted = float(coral_loss()(labels.reshape(-1, 1), logits))
    assert unweighted == pytest.approx(_reference_loss(logits, labels, 1.0), rel=1e-4, abs=1e-4)


def test_loss_is_finite_for_extreme_logits():
    logits = np.array([[100.0, -100.0, 100.0], [-100.0, 100.0, -100.0]], dtype="float32")
    value = float(coral_loss()(np.array([0, 3]), logits))
    assert np.isfinite(value)
    # Every task is wrong by a margin of 100 for two of three tasks per row: loss ~ (200 + 200) / 2.
    assert value == pytest.approx(200.0, rel=1e-3)


def test_weighted_loss_on_a_batch_weights_each_task():
    logits = np.zeros((2, 2), dtype="float32")
    plain = float(coral_loss()(np.array([0, 2]), logits))
    weighted = float(coral_loss(np.array([1.0, 0.5]))(np.array([0, 2]), logits))
    assert plain == pytest.approx(2 * np.log(2), rel=1e-5)
    assert weighted == pytest.approx(1.5 * np.log(2), rel=1e-5)


@settings(max_examples=25, deadline=None)
@given(
    hnp.arrays("float32", st.tuples(st.integers(1, 5), st.integers(1, 8)), elements=finite),
    st.integers(3, 15),
    st.integers(0, 2**31 - 1),
)
def test_probabilities_non_increasing_for_any_input(features, num_classes, seed):
    layer = CoralLayer(num_classes)
    layer.build(features.shape)
    rng = np.random.default_rng(seed)
    layer.fc.assign(rng.normal(size=layer.fc.shape).astype("float32"))
    layer.coral_bias.assign(np.sort(rng.normal(size=num_classes - 1))[::-1].astype("float32"))
    probas = probas_from_logits(np.asarray(layer(features)))
    assert probas.shape == (len(features), num_classes - 1)
    assert np.all(np.diff(probas, axis=1) <= 1e-6)


def test_untrained_layer_biases_are_rank_consistent():
    layer = CoralLayer(6)
    layer.build((None, 3))
    assert np.all(np.diff(np.asarray(layer.coral_bias)) < 0)


def test_layer_config_round_trip():
    layer = CoralLayer(7, name="head")
    clone = CoralLayer.from_config(layer.get_config())
    assert clone.num_classes == 7
    assert clone.name == "head"


def test_probas_from_logits_is_stable():
    probas = probas_from_logits(np.array([[-1000.0, 0.0, 1000.0]]))
    assert probas.tolist() == [[0.0, 0.5, 1.0]]
