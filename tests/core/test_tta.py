"""Flip averaging inside the model: the mean of a face's and its mirror's logits, rank-consistent, saved and loaded."""

import keras
import numpy as np
import pytest

from core.artifact import load_model, save_model
from core.coral import CoralLayer, probas_from_logits
from core.tta import HorizontalFlip, with_flip_averaging


@pytest.fixture(scope="module")
def base():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    # Flatten keeps positions, so the network is not mirror-invariant and averaging changes the output.
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, CoralLayer(7)(x))


def test_flip_layer_mirrors_left_to_right():
    x = np.arange(2 * 3 * 4 * 1, dtype="float32").reshape(2, 3, 4, 1)
    assert np.array_equal(np.asarray(HorizontalFlip()(x)), x[:, :, ::-1])


def test_logits_are_the_mean_of_image_and_mirror(base):
    x = np.random.default_rng(1).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    wrapped = with_flip_averaging(base)
    direct, mirrored = np.asarray(base(x)), np.asarray(base(x[:, :, ::-1]))
    assert not np.allclose(direct, mirrored)
    assert np.allclose(np.asarray(wrapped(x)), (direct + mirrored) / 2, atol=1e-6)
    assert np.all(np.diff(probas_from_logits(np.asarray(wrapped(x))), axis=1) <= 1e-7)


def test_wrapped_model_saves_and_loads(base, tmp_path):
    wrapped = with_flip_averaging(base)
    meta = {
        "start_label": 0,
        "num_classes": 7,
        "img_size": 16,
        "chip_padding": 0.25,
        "threshold": 0.5,
        "arch_type": "resnet",
        "arch_subtype": 18,
    }
    path = save_model(wrapped, tmp_path / "tta.h5", meta)
    x = np.random.default_rng(2).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    assert np.allclose(np.asarray(load_model(path)(x)), np.asarray(wrapped(x)), atol=1e-6)
