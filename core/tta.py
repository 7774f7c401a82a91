"""Test-time augmentation that travels inside the model file: average the logits of a face and its mirror image.

Faces are close to left-right symmetric while the network's errors on a face and on its mirror image are only partly
correlated, so averaging the two logit vectors lowers the error at the cost of a second forward pass. Averaging
keeps rank consistency: each input's logits are ``g(x) + b_k`` with the same ordered biases (Cao et al. 2020,
Theorem 1), so the mean is ``(g(x) + g(x')) / 2 + b_k``. Built into the saved model, the service, ``age-demo`` and
``age-evaluate`` all apply it without knowing about it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["HorizontalFlip", "with_flip_averaging", "without_flip_averaging"]


@keras.saving.register_keras_serializable(package="coral")
class HorizontalFlip(keras.layers.Layer):
    """Mirror images ``(N, H, W, C)`` left to right, in training and inference alike (unlike ``RandomFlip``)."""

    def call(self, inputs: Any) -> Any:
        return ops.flip(inputs, axis=2)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


def with_flip_averaging(model: keras.Model) -> keras.Model:
    """Wrap ``model`` (images ``(N, S, S, 3)`` -> logits ``(N, K-1)``) so it returns the mean logits of the image
    and its mirror; same input and output shapes, shared weights."""
    inputs = keras.Input(model.input_shape[1:], name="image")
    direct = model(inputs)
    mirrored = model(HorizontalFlip(name="mirror")(inputs))
    logits = keras.layers.Average(name="flip_average", dtype="float32")([direct, mirrored])
    return keras.Model(inputs, logits, name=f"{model.name}_flip_averaged")


def without_flip_averaging(model: keras.Model) -> keras.Model:
    """The network inside a :func:`with_flip_averaging` wrapper (one forward pass per image); ``model`` itself when
    it is not such a wrapper."""
    if not any(isinstance(layer, HorizontalFlip) for layer in model.layers):
        return model
    (inner,) = {id(layer): layer for layer in model.layers if isinstance(layer, keras.Model)}.values()
    return inner
