"""core.fold: Affine layers folded into their convolutions give the same logits with fewer layers doing work."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from core.fold import fold_affine, foldable_pairs
from core.layers import Affine, ZeroPadAdd


def _randomise(model: keras.Model, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            _randomise(layer, seed + 1)
        elif layer.weights:
            layer.set_weights([rng.normal(1.0 if "gamma" in w.name else 0.0, 0.5, w.shape) for w in layer.weights])


def _block(inputs: keras.KerasTensor, name: str) -> keras.KerasTensor:
    x = keras.layers.Conv2D(6, 3, padding="same", name=f"{name}_conv")(inputs)
    x = Affine(name=f"{name}_affine")(x)
    x = keras.layers.ReLU()(x)
    y = keras.layers.Conv2D(4, 3, strides=2, name=f"{name}_down")(x)
    y = Affine(name=f"{name}_down_affine")(y)
    return ZeroPadAdd()([keras.layers.MaxPooling2D(2)(x), y])


def _model() -> keras.Model:
    inputs = keras.Input((16, 16, 3))
    # Two consumers: folding this convolution's Affine would change what the second consumer sees.
    shared = keras.layers.Conv2D(3, 1, name="shared_conv")(inputs)
    branch = keras.layers.Add()([Affine(name="shared_affine")(shared), shared])
    inner_in = keras.Input((16, 16, 3))
    inner = keras.Model(inner_in, _block(inner_in, "inner"), name="inner")
    x = _block(inner(branch), "outer")
    logits = keras.layers.Dense(5)(keras.layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, logits)
    _randomise(model, 0)
    return model


def test_folds_every_single_consumer_pair_and_keeps_the_logits() -> None:
    model = _model()
    assert set(foldable_pairs(model)) == {"inner_conv", "inner_down", "outer_conv", "outer_down"}
    folded = fold_affine(model)
    chips = np.random.default_rng(1).uniform(0, 255, (4, 16, 16, 3)).astype(np.float32)
    expected = model.predict_on_batch(chips)
    np.testing.assert_allclose(folded.predict_on_batch(chips), expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    remaining = [layer.name for layer in folded.layers if isinstance(layer, Affine)]
    assert remaining == ["shared_affine"]
    assert not foldable_pairs(folded)


def test_a_model_without_pairs_is_returned_as_it_is() -> None:
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.Flatten()(inputs)))
    assert fold_affine(model) is model


def test_face_resnet_folds_exactly() -> None:
    pytest.importorskip("dlib")
    from trainer.model import build_model

    model = build_model("face_resnet", 29, 150, 90, pretrained=None)
    _randomise(model, 2)
    folded = fold_affine(model)
    assert len(foldable_pairs(model)) == 29
    chips = np.random.default_rng(3).uniform(0, 255, (2, 150, 150, 3)).astype(np.float32)
    expected = model.predict_on_batch(chips)
    np.testing.assert_allclose(folded.predict_on_batch(chips), expected, atol=1e-4 * max(1.0, np.abs(expected).max()))
