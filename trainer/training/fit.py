"""The build and fit steps of ``age-train``: the datasets, the compiled CORAL network, ``fit``, the serving copy.

Everything here runs after the distribution strategy exists (``trainer.training.distribute.choose_strategy``), which
``MultiWorkerMirroredStrategy`` needs before anything touches TensorFlow's context.
"""

from __future__ import annotations

import math
import shutil
import sys
import warnings
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from core.coral import CoralLayer, coral_loss, importance_weights, levels_from_labels
from core.tta import with_flip_averaging
from trainer.data.augmentation import Robustness
from trainer.data.dataset import make_dataset
from trainer.evaluation.metrics import AgeMAE, AgeRMSE
from trainer.model.build import build_model, is_whole_model_weights
from trainer.model.optimiser import freeze_callbacks, make_optimizer
from trainer.training.callbacks import KnownStepsProgbar, training_callbacks
from trainer.training.config import TrainConfig
from trainer.training.run_folder import Run

BASIC_RESNETS = (18, 34)


def make_datasets(config: TrainConfig, run: Run) -> dict[str, tf.data.Dataset]:
    """``(images, labels)`` batches of each split; only the training split shuffles and augments."""
    cache_dir = run.run_dir / "cache"
    # A disk cache from an earlier start may hold another split or size; decoding once more is the safe price.
    shutil.rmtree(cache_dir, ignore_errors=True)
    return {
        name: make_dataset(
            frame,
            config.img_size,
            config.batch_size,
            training=name == "train",
            augment=config.augment,
            zoom=config.augment_zoom,
            robustness=Robustness.from_config(config),
            cache=config.cache,
            cache_path=cache_dir / name,
            seed=config.seed,
        )
        for name, frame in run.splits.items()
    }


def network(config: TrainConfig, num_classes: int, pretrained: bool = True) -> keras.Model:
    """The configured CORAL network (``num_classes - 1`` logits), with its pretrained weights unless told not to."""
    extra = {"width": config.width} if config.arch_type == "resnet" and config.arch_subtype in BASIC_RESNETS else {}
    return build_model(
        config.arch_type,
        config.arch_subtype,
        config.img_size,
        num_classes,
        dropout=config.dropout,
        pretrained=config.pretrained if pretrained else None,
        **extra,
    )


def init_coral_biases(model: keras.Model, labels: np.ndarray, num_classes: int) -> None:
    """Start each CORAL bias at the training prior's log-odds ``logit(P(y > k))``.

    The untrained model then predicts the training median rank instead of the middle of the range, so the
    first epochs learn faces rather than the label distribution (biases move only ~learning_rate per step).
    The prior is non-increasing in k, so the biases stay ordered as the paper's Theorem 1 needs.
    """
    share = np.clip(levels_from_labels(labels, num_classes).mean(axis=0), 1e-3, 1 - 1e-3)
    for layer in model.layers:
        if isinstance(layer, CoralLayer):
            layer.coral_bias.assign(np.log(share / (1 - share)).astype("float32"))
            return


def build(config: TrainConfig, run: Run, strategy: tf.distribute.Strategy) -> keras.Model:
    """The network compiled with the (importance-weighted) CORAL loss and age metrics, in ``strategy``'s scope."""
    num_classes = run.summary.num_classes
    train_labels = run.splits["train"]["label"].to_numpy()
    weights = importance_weights(train_labels, num_classes) if config.task_weighting else None
    steps_per_epoch = math.ceil(len(run.splits["train"]) / config.batch_size)
    with strategy.scope():
        model = network(config, num_classes)
        if not is_whole_model_weights(config.pretrained):
            init_coral_biases(model, train_labels, num_classes)
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            loss=coral_loss(weights),
            metrics=[AgeMAE(config.threshold), AgeRMSE(config.threshold)],
        )
    return model


def fit(
    model: keras.Model,
    config: TrainConfig,
    run: Run,
    datasets: dict[str, tf.data.Dataset],
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> None:
    """Train to ``num_epochs`` (or early stopping), then hold the best-validation weights when checkpointed."""
    with warnings.catch_warnings():
        # Keras says these about every tf.data input of unknown length (undecodable images drop on the fly).
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
        model.fit(
            datasets["train"],
            validation_data=datasets["val"],
            epochs=config.num_epochs,
            callbacks=[
                *training_callbacks(config, run.run_dir),
                *freeze_callbacks(config),
                KnownStepsProgbar(math.ceil(len(run.splits["train"]) / config.batch_size)),
                *extra_callbacks,
            ],
            verbose=1 if sys.stdout.isatty() else 2,
        )
    best = run.run_dir / "checkpoints" / "best.weights.h5"
    if config.checkpoint and best.is_file():
        model.load_weights(str(best))


def serving_copy(config: TrainConfig, run: Run, model: keras.Model) -> keras.Model:
    """The trained weights in a float32 network without distribution wrappers (+ mirror pass when configured)."""
    keras.mixed_precision.set_global_policy("float32")
    final = network(config, run.summary.num_classes, pretrained=False)
    final.set_weights(model.get_weights())
    return with_flip_averaging(final) if config.test_time_flip else final
