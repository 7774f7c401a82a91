"""Where training runs: one device, several GPUs of one machine, or several machines; and in which precision.

``choose_strategy`` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` is set (each machine runs the same
``age-train`` with its own ``TF_CONFIG``), ``MirroredStrategy`` when more than one GPU is visible (or, with
``distribute="mirrored"``, over every visible device of the fastest kind, which also lets CPU tests split the
work over logical CPU devices), and the default single-device strategy otherwise. ``batch_size`` is always the
global batch, split across replicas.
"""

from __future__ import annotations

import json
import os
from typing import Literal

import keras
import tensorflow as tf


def choose_strategy(mode: Literal["auto", "mirrored", "none"] = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``mode`` (see the module docstring)."""
    if mode == "none":
        return tf.distribute.get_strategy()
    if os.environ.get("TF_CONFIG") and _cluster_size() > 1:
        return tf.distribute.MultiWorkerMirroredStrategy()
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    if mode == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def _cluster_size() -> int:
    try:
        cluster = json.loads(os.environ["TF_CONFIG"]).get("cluster", {})
    except (ValueError, AttributeError):
        return 0
    return sum(len(members) for members in cluster.values())


def set_precision(mixed_precision: Literal["auto"] | bool) -> str:
    """Set Keras' global dtype policy and return its name.

    ``"auto"`` chooses ``mixed_float16`` when a GPU is visible (Tensor Cores; the CORAL head stays float32) and
    ``float32`` on CPU, where float16 arithmetic is slower, not faster.
    """
    use_mixed = bool(tf.config.list_logical_devices("GPU")) if mixed_precision == "auto" else mixed_precision
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def is_chief() -> bool:
    """True on the worker that writes files (the only one outside multi-worker training)."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG", "{}"))
        task, cluster = tf_config.get("task", {}), tf_config.get("cluster", {})
    except (ValueError, AttributeError):
        return True
    if task.get("type", "chief") == "chief":
        return True
    # Without an explicit chief, worker 0 plays that role (TensorFlow's convention).
    return "chief" not in cluster and task.get("type") == "worker" and task.get("index", 0) == 0
