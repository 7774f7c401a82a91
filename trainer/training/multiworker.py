"""Training across machines: a small custom loop in place of ``model.fit`` under ``MultiWorkerMirroredStrategy``.

Keras 3.15's ``fit`` cannot run a multi-worker step: its data adapter tries to convert the distributed
``(images, labels)`` batch to a tensor ("Attempt to convert a value (PerReplica ...", keras-team/keras#20585).
So with more than one worker, and only then, ``age-train`` trains with the loop below; one machine (one device or
``MirroredStrategy``) keeps ``trainer.training.fit.fit``.

What the loop does the same as ``fit``: the compiled model, optimiser (learning-rate schedule, backbone freeze,
loss scaling under mixed precision) and CORAL loss; ``steps_per_epoch = ceil(n_train / batch_size)`` steps of one
global batch each; validation MAE/RMSE/loss each epoch over the whole validation split; early stopping with the
configured patience and the best-validation-MAE weights kept at the end; on the chief, ``history.csv`` (same
columns), ``checkpoints/best.weights.h5`` and TensorBoard logs. Gradients are summed across every replica of every
worker, each replica's loss scaled by the global number of examples in the step; validation sums are reduced
across workers, so every worker takes the same early-stopping decision.

What differs: each worker reads its own share of the training split (every ``num_workers``-th row), repeated, so
no replica ever gets an empty batch (an empty batch would write NaN into batch-normalisation statistics); an epoch
is therefore ``steps_per_epoch`` global batches rather than exactly one pass. There is no last-epoch backup and no
``resume`` (refused with a ``ConfigError``); batch-level callback hooks are not called.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from core.errors import ConfigError
from trainer.data.augmentation import Robustness
from trainer.data.dataset import make_dataset
from trainer.model.optimiser import freeze_callbacks
from trainer.training.callbacks import ResumableEarlyStopping, training_callbacks
from trainer.training.config import TrainConfig
from trainer.training.distribute import is_chief
from trainer.training.run_folder import Run

SUM = tf.distribute.ReduceOp.SUM


def applies(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` spans more than one worker (the case ``model.fit`` cannot train)."""
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return False
    spec = strategy.cluster_resolver.cluster_spec()
    return sum(spec.num_tasks(job) for job in spec.jobs) > 1


def check(config: TrainConfig) -> None:
    """Refuse, before any work, what multi-worker training does not support."""
    if config.resume:
        raise ConfigError("resume: not supported with several workers (TF_CONFIG); start the run again without it")


def _train_dataset(config: TrainConfig, run: Run, strategy: tf.distribute.Strategy) -> Any:
    """Per replica batches of this worker's rows of the training split, repeated without end."""

    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        share = run.splits["train"].iloc[context.input_pipeline_id :: context.num_input_pipelines]
        batch = max(1, config.batch_size // context.num_replicas_in_sync)
        dataset = make_dataset(
            share,
            config.img_size,
            batch,
            training=True,
            augment=config.augment,
            zoom=config.augment_zoom,
            robustness=Robustness.from_config(config),
            cache=config.cache,
            cache_path=run.run_dir / "cache" / f"train_worker{context.input_pipeline_id}",
            seed=config.seed + context.input_pipeline_id,
        )
        return dataset.repeat()

    return strategy.distribute_datasets_from_function(dataset_fn)


def _sums(model: keras.Model, images: Any, labels: Any, threshold: float, training: bool) -> tuple[Any, Any]:
    """The replica's loss scaled by the global example count, and its ``[loss, |err|, err^2, n]`` sums."""
    logits = model(images, training=training)
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    total = tf.distribute.get_replica_context().all_reduce(SUM, count)
    # A replica may see an empty validation batch: its mean is NaN, its share of the sum is 0.
    loss_sum = tf.math.multiply_no_nan(tf.cast(model.loss(labels, logits), tf.float32), count)
    ranks = tf.reduce_sum(tf.cast(tf.sigmoid(tf.cast(logits, tf.float32)) > threshold, tf.float32), axis=-1)
    errors = ranks - tf.cast(tf.reshape(labels, (-1,)), tf.float32)
    sums = tf.stack([loss_sum, tf.reduce_sum(tf.abs(errors)), tf.reduce_sum(tf.square(errors)), count])
    return loss_sum / tf.maximum(total, 1.0), sums


def _step_functions(model: keras.Model, strategy: tf.distribute.Strategy, threshold: float) -> tuple[Any, Any]:
    optimizer = model.optimizer

    def train_replica(images: Any, labels: Any) -> Any:
        with tf.GradientTape() as tape:
            loss, sums = _sums(model, images, labels, threshold, training=True)
            if model.losses:
                loss += tf.add_n(model.losses) / strategy.num_replicas_in_sync
            scaled = optimizer.scale_loss(loss)
        variables = model.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(scaled, variables), variables, strict=True))
        return sums

    def eval_replica(images: Any, labels: Any) -> Any:
        return _sums(model, images, labels, threshold, training=False)[1]

    @tf.function
    def train_step(iterator: Any) -> Any:
        return strategy.reduce(SUM, strategy.run(train_replica, args=next(iterator)), axis=None)

    @tf.function(reduce_retracing=True)
    def eval_step(batch: Any) -> Any:
        return strategy.reduce(SUM, strategy.run(eval_replica, args=batch), axis=None)

    return train_step, eval_step


def _logs(sums: Any, prefix: str = "") -> dict[str, float]:
    loss, abs_err, sq_err, count = (float(value) for value in sums)
    count = max(count, 1.0)
    return {f"{prefix}loss": loss / count, f"{prefix}mae": abs_err / count, f"{prefix}rmse": math.sqrt(sq_err / count)}


def _callbacks(
    model: keras.Model, config: TrainConfig, run: Run, chief: bool, extra: Sequence[keras.callbacks.Callback]
) -> keras.callbacks.CallbackList:
    """``fit``'s epoch callbacks less the last-epoch backup; the files (history, checkpoints, logs) on the chief
    only, early stopping on every worker (its decision comes from reduced values, so it is the same on all)."""
    kept = [c for c in training_callbacks(config, run.run_dir) if not isinstance(c, keras.callbacks.BackupAndRestore)]
    if not chief:
        kept = [c for c in kept if isinstance(c, ResumableEarlyStopping)]
    return keras.callbacks.CallbackList([*kept, *freeze_callbacks(config), *extra], model=model)


def fit(
    model: keras.Model,
    config: TrainConfig,
    run: Run,
    datasets: dict[str, tf.data.Dataset],
    strategy: tf.distribute.Strategy,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> None:
    """Train ``model`` (compiled in ``strategy``'s scope) to ``num_epochs`` or early stopping on every worker."""
    check(config)
    with strategy.scope():
        model.optimizer.build(model.trainable_variables)
    steps = math.ceil(len(run.splits["train"]) / config.batch_size)
    train_iterator = iter(_train_dataset(config, run, strategy))
    val = strategy.experimental_distribute_dataset(datasets["val"])
    train_step, eval_step = _step_functions(model, strategy, config.threshold)
    callbacks = _callbacks(model, config, run, is_chief(strategy), extra_callbacks)
    model.stop_training = False
    callbacks.on_train_begin()
    for epoch in range(config.num_epochs):
        started = time.monotonic()
        callbacks.on_epoch_begin(epoch)
        train_sums = sum((train_step(train_iterator) for _ in range(steps)), tf.zeros(4))
        val_sums = sum((eval_step(batch) for batch in val), tf.zeros(4))
        logs = _logs(train_sums) | _logs(val_sums, "val_")
        callbacks.on_epoch_end(epoch, logs)
        shown = " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())
        print(f"Epoch {epoch + 1}/{config.num_epochs} - {time.monotonic() - started:.0f}s - {shown}", flush=True)
        if model.stop_training:
            break
    callbacks.on_train_end()
    sys.stdout.flush()
