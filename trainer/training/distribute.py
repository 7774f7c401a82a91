"""Where training runs: one device, several GPUs of one machine, or several machines; and in which precision.

``choose_strategy`` picks ``MultiWorkerMirroredStrategy`` when ``TF_CONFIG`` describes a cluster of more than one
task (each machine runs the same ``age-train`` with its own ``TF_CONFIG``, read by TensorFlow's
``TFConfigClusterResolver``), ``MirroredStrategy`` when more than one GPU is visible (or, with
``distribute="mirrored"``, over every visible device of the fastest kind, which also lets CPU tests split the
work over logical CPU devices), and the default single-device strategy otherwise. ``batch_size`` is always the
global batch, split across replicas.

Order matters: ``MultiWorkerMirroredStrategy`` configures collective ops, which TensorFlow accepts only before its
context is initialised, so ``choose_strategy`` must run before anything creates a tensor, a dataset, a summary
writer or a dtype policy that lists devices (``set_precision``).
"""

from __future__ import annotations

from typing import Literal

import keras
import tensorflow as tf


def cluster_size() -> int:
    """How many tasks ``TF_CONFIG`` names (0 when it is unset or names none); reads no TensorFlow state."""
    spec = tf.distribute.cluster_resolver.TFConfigClusterResolver().cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs)


def choose_strategy(mode: Literal["auto", "mirrored", "none"] = "auto") -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``mode`` (see the module docstring); call it before any other TF work."""
    if mode == "none":
        return tf.distribute.get_strategy()
    if cluster_size() > 1:
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return tf.distribute.MirroredStrategy([device.name for device in gpus])
    if mode == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([device.name for device in devices])
    return tf.distribute.get_strategy()


def set_precision(mixed_precision: Literal["auto"] | bool) -> str:
    """Set Keras' global dtype policy and return its name (after ``choose_strategy``: it lists devices).

    ``"auto"`` chooses ``mixed_float16`` when a GPU is visible (Tensor Cores; the CORAL head stays float32) and
    ``float32`` on CPU, where float16 arithmetic is slower, not faster.
    """
    use_mixed = bool(tf.config.list_logical_devices("GPU")) if mixed_precision == "auto" else mixed_precision
    policy = "mixed_float16" if use_mixed else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True on the worker that evaluates and writes the model: the chief (worker 0 without an explicit chief),
    and the only worker outside multi-worker training."""
    return bool(strategy.extended.should_checkpoint)
