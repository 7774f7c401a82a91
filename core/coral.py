"""CORAL: Consistent Rank Logits for ordinal regression.

Cao, Mirjalili & Raschka, "Rank consistent ordinal regression for neural networks with application to age
estimation", Pattern Recognition Letters 140 (2020), arXiv:1901.07884.

An ordinal label y in {0, ..., K-1} (here: age - start_label) is expanded into K-1 binary "levels"
(y > k for k = 0..K-2). The network's last layer computes one shared projection g(x) = w . x and K-1 logits
g(x) + b_k. Theorem 1 of the paper: when b_0 >= b_1 >= ... >= b_{K-2}, the probabilities
P(y > k) = sigmoid(g(x) + b_k) are non-increasing in k, so the predicted label, the number of probabilities above
the threshold, is always well defined.

Shapes: ``N`` is the batch size, ``K`` the number of classes (ranks); logits, probabilities and levels are
``(N, K-1)``; labels are integer ranks ``(N,)`` in ``0..K-1``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
from keras import ops

# The decoding of logits is NumPy only: it lives with the age distribution, so that code decoding ages (age-batch's
# model actors behind an ONNX engine) need not import Keras; it stays part of this module's API.
from core.distribution import labels_from_probas, probas_from_logits

__all__ = [
    "CoralLayer",
    "coral_loss",
    "importance_weights",
    "labels_from_probas",
    "levels_from_labels",
    "probas_from_logits",
]


@keras.saving.register_keras_serializable(package="coral")
class CoralLayer(keras.layers.Layer):
    """The CORAL output layer: one weight vector shared by all K-1 tasks plus K-1 independent biases.

    Input: features ``(N, D)``. Output: logits ``(N, K-1)``, ``logits[:, k] = x . w + b_k`` (paper, Eq. 5).

    The biases start at ``linspace(+s, -s)`` with a small ``s``: strictly descending, so the untrained model is
    already rank-consistent and the first gradient steps do not have to untangle crossed thresholds.
    """

    def __init__(self, num_classes: int, bias_spread: float = 0.5, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"CoralLayer needs num_classes >= 2 (got {num_classes})")
        self.num_classes = int(num_classes)
        self.bias_spread = float(bias_spread)

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        features = input_shape[-1]
        if features is None:
            raise ValueError("CoralLayer needs a known feature dimension")
        self.fc = self.add_weight(
            name="fc",
            shape=(int(features), 1),
            initializer="glorot_uniform",
            trainable=True,
        )
        start = np.linspace(self.bias_spread, -self.bias_spread, self.num_classes - 1, dtype="float32")
        self.coral_bias = self.add_weight(
            name="coral_bias",
            shape=(self.num_classes - 1,),
            initializer=keras.initializers.Constant(start),
            trainable=True,
        )

    def call(self, inputs: Any) -> Any:
        projection = ops.matmul(inputs, ops.cast(self.fc, inputs.dtype))
        return projection + ops.cast(self.coral_bias, inputs.dtype)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return (input_shape[0], self.num_classes - 1)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update({"num_classes": self.num_classes, "bias_spread": self.bias_spread})
        return config


def levels_from_labels(labels: Any, num_classes: int) -> np.ndarray:
    """Expand integer ranks ``(N,)`` in ``0..K-1`` into levels ``(N, K-1)`` float32, ``levels[i, k] = y_i > k``."""
    labels = np.asarray(labels).reshape(-1)
    if labels.size and (labels.min() < 0 or labels.max() > num_classes - 1):
        raise ValueError(f"labels must lie in 0..{num_classes - 1} (got {labels.min()}..{labels.max()})")
    return (labels[:, None] > np.arange(num_classes - 1)[None, :]).astype("float32")


def importance_weights(labels: Any, num_classes: int) -> np.ndarray:
    """The paper's task importance weights ``(K-1,)`` float32 (Section 3.3, Eq. 6).

    ``lambda_k = sqrt(max(S_k, N - S_k))`` with ``S_k`` the number of training labels greater than ``k``, divided by
    the largest: tasks whose binary split is balanced weigh least, lopsided ones (rare old ages) most.
    """
    levels = levels_from_labels(labels, num_classes)
    if levels.shape[0] == 0:
        raise ValueError("importance_weights needs at least one label")
    s_k = levels.sum(axis=0)
    weights = np.sqrt(np.maximum(s_k, levels.shape[0] - s_k))
    return (weights / weights.max()).astype("float32")


def coral_loss(importance_weights: Any = None) -> Callable[[Any, Any], Any]:
    """The CORAL loss (paper, Eq. 4) as a Keras loss ``fn(y_true, logits) -> scalar``.

    ``y_true``: integer ranks ``(N,)`` or ``(N, 1)`` in ``0..K-1``; ``logits``: ``(N, K-1)``. Per example,
    ``-sum_k lambda_k [y_k log s(z_k) + (1 - y_k) log(1 - s(z_k))]`` with ``log s(z) = -softplus(-z)`` and
    ``log(1 - s(z)) = -softplus(z)``, which stays finite for any logit; the result is the mean over the batch.
    """
    weights = None if importance_weights is None else np.asarray(importance_weights, dtype="float32")

    def loss(y_true: Any, logits: Any) -> Any:
        logits = ops.cast(logits, "float32")
        num_tasks = ops.shape(logits)[-1]
        labels = ops.reshape(ops.cast(y_true, "int32"), (-1, 1))
        levels = ops.cast(labels > ops.expand_dims(ops.arange(num_tasks, dtype="int32"), 0), "float32")
        per_task = levels * ops.softplus(-logits) + (1.0 - levels) * ops.softplus(logits)
        if weights is not None:
            per_task = per_task * ops.convert_to_tensor(weights)
        return ops.mean(ops.sum(per_task, axis=-1))

    loss.__name__ = "coral_loss"
    return loss
