"""The ``age-train`` job as a short list of named steps: check, strategy, run folder, fit, report.

Steps: build the distribution strategy; check the pretrained weights and the CSV; split by ``ID`` into
train/val/test (CSVs in the run folder); fit with the CORAL loss (paper's importance weights when
``task_weighting``), reporting MAE and RMSE in years; keep the best-validation-MAE weights and a last-epoch
checkpoint that ``resume: true`` continues from; score the test split (``metrics.json`` + PNGs); save the best
model with ``core.artifact.save_model``. The command itself is ``trainer.cli.train``.

This module imports neither TensorFlow nor Keras at import time, so that ``age-train`` reports a bad config
before paying for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from trainer.training.config import TrainConfig

if TYPE_CHECKING:
    import keras
    import pandas as pd
    import tensorflow as tf

    from trainer.data.dataset import DataSummary


def train(
    config: TrainConfig,
    table: pd.DataFrame,
    summary: DataSummary,
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
    strategy: tf.distribute.Strategy | None = None,
) -> Path | None:
    """Run the whole job on a clean table; return the saved ``.h5`` (``None`` on non-chief workers).

    The strategy comes first (``main`` builds it before checking the pretrained weights, else it is built here):
    ``MultiWorkerMirroredStrategy`` can only be built before anything initialises TensorFlow's context (a
    pretrained backbone, the TensorBoard writer, the precision policy, a dataset). With more than one worker the
    fit step is ``trainer.training.multiworker.fit`` (a custom loop; no ``resume``), else ``trainer.training.fit.fit``.
    """
    import keras

    from trainer.training import fit as fitting
    from trainer.training import multiworker, results, run_folder
    from trainer.training.distribute import choose_strategy, is_chief, set_precision

    strategy = strategy or choose_strategy(config.distribute)
    several_workers = multiworker.applies(strategy)
    if several_workers:
        multiworker.check(config)
    keras.utils.set_random_seed(config.seed)
    run = run_folder.prepare(config, table, summary)
    policy = set_precision(config.mixed_precision)
    print(f"precision: {policy}; replicas: {strategy.num_replicas_in_sync}")
    datasets = fitting.make_datasets(config, run)
    model = fitting.build(config, run, strategy)
    if several_workers:  # Keras 3.15's fit fails under several workers (keras-team/keras#20585)
        multiworker.fit(model, config, run, datasets, strategy, extra_callbacks)
    else:
        fitting.fit(model, config, run, datasets, extra_callbacks)
    final = fitting.serving_copy(config, run, model)
    if not is_chief(strategy):
        return None
    return results.report(config, run, final, datasets)


def run_job(config: TrainConfig) -> Path | None:
    """Check and run the whole job for a valid ``config``; raises ``ConfigError`` before any work on bad data.

    The strategy is built first: ``check_pretrained`` may build a backbone, which initialises TensorFlow's
    context, and a lone worker of a cluster would wait for its peers before it could refuse a config.
    """
    from trainer.data.dataset import load_table
    from trainer.model.pretrained import check_pretrained
    from trainer.training import multiworker
    from trainer.training.distribute import choose_strategy, cluster_size

    if config.distribute != "none" and cluster_size() > 1:
        multiworker.check(config)
    strategy = choose_strategy(config.distribute)
    check_pretrained(config)
    table, summary = load_table(config.csv_path, config.img_dir, config.start_label, config.end_label, config.clip_ages)
    return train(config, table, summary, strategy=strategy)
