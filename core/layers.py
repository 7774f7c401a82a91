"""Custom Keras layers that saved backbones need at load time, registered so every consumer loads them safely.

They live in ``core`` (not ``trainer``) because the service loads every model without the trainer, and Keras'
safe mode refuses ``Lambda`` layers. Each has ``get_config`` and is registered under the ``coral`` package, as
``core.coral.CoralLayer`` is.

- :class:`Affine`: dlib's ``affine`` layer, a learnt per-channel scale and shift (what batch normalisation folds
  into at inference; dlib's face-recognition network keeps only this form).
- :class:`ZeroPadAdd`: dlib's ``add_prev`` for tensors of different shapes: each input is padded with zeros at
  the bottom, the right and the end of the channels up to the larger shape, then the two are added.
- :class:`CaffePreprocess`: the ``keras.applications`` ResNet/VGG ImageNet preprocessing (RGB -> BGR, ImageNet
  channel means subtracted), inside the model so that trainer and service cannot disagree about it.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

__all__ = ["Affine", "CaffePreprocess", "ZeroPadAdd"]

# ImageNet channel means in BGR order, as keras.applications.imagenet_utils' "caffe" mode subtracts them.
_CAFFE_BGR_MEANS = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="coral")
class Affine(keras.layers.Layer):
    """``y = x * gamma + beta`` per channel (last axis). Input and output ``(N, ..., C)``, same shape and dtype."""

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = int(input_shape[-1])  # type: ignore[arg-type]
        self.gamma = self.add_weight(shape=(channels,), initializer="ones", name="gamma")
        self.beta = self.add_weight(shape=(channels,), initializer="zeros", name="beta")

    def call(self, inputs: Any) -> Any:
        return inputs * ops.cast(self.gamma, inputs.dtype) + ops.cast(self.beta, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


@keras.saving.register_keras_serializable(package="coral")
class ZeroPadAdd(keras.layers.Layer):
    """Add two ``(N, H, W, C)`` tensors whose ``H``, ``W`` or ``C`` differ, as dlib's ``add_prev`` does.

    The output has the larger size in each axis; the smaller tensor is zero-padded after its last row, column
    and channel (dlib pads at the bottom and right). Inputs: a list ``[a, b]``; sizes must be known when built.
    """

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[int | None, ...]:
        a, b = input_shape
        return (a[0], *(max(int(x), int(y)) for x, y in zip(a[1:], b[1:], strict=True)))  # type: ignore[arg-type]

    def call(self, inputs: list[Any]) -> Any:
        a, b = inputs
        target = [max(int(x), int(y)) for x, y in zip(a.shape[1:], b.shape[1:], strict=True)]
        return self._pad(a, target) + self._pad(b, target)

    @staticmethod
    def _pad(tensor: Any, target: list[int]) -> Any:
        widths = [(0, want - int(have)) for have, want in zip(tensor.shape[1:], target, strict=True)]
        if not any(after for _, after in widths):
            return tensor
        return ops.pad(tensor, [(0, 0), *widths])


@keras.saving.register_keras_serializable(package="coral")
class CaffePreprocess(keras.layers.Layer):
    """RGB float ``(N, H, W, 3)`` in 0..255 -> BGR minus the ImageNet means, as ``keras.applications`` ResNet and
    VGG weights expect (``imagenet_utils.preprocess_input`` in ``"caffe"`` mode)."""

    def call(self, inputs: Any) -> Any:
        bgr = ops.flip(inputs, axis=-1)
        return bgr - ops.cast(ops.convert_to_tensor(_CAFFE_BGR_MEANS), inputs.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape
