"""``age-train --config FILE [--set KEY=VALUE ...]``: the batch training job, config to self-describing ``.h5``.

Steps: validate the config and the CSV (exit code 2 on any problem, before any work, and before TensorFlow is
even imported for a bad config); build the distribution strategy; split by ``ID`` into train/val/test (CSVs in
the run folder); fit with the CORAL loss (paper's importance weights when ``task_weighting``), reporting MAE and
RMSE in years; keep the best-validation-MAE weights and a last-epoch checkpoint that ``resume: true`` continues
from; score the test split (``metrics.json`` + PNGs); save the best model with ``core.artifact.save_model``. The
last line printed is ``saved: PATH``.

This module imports neither TensorFlow nor Keras at import time: ``main`` reads the config first, so that a typo
costs a fraction of a second and prints nothing but the error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from core.errors import ConfigError
from trainer.config import TrainConfig, load_config, parse_overrides

if TYPE_CHECKING:
    import keras
    import pandas as pd
    import tensorflow as tf

    from trainer.data import DataSummary


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
    fit step is ``trainer.multiworker.fit`` (a custom loop; no ``resume``), else ``trainer.fitting.fit``.
    """
    import keras

    from trainer import fitting, multiworker, results, run_folder
    from trainer.distribute import choose_strategy, is_chief, set_precision

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


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, so a shipped model names no home folder."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-train``; exit code 2 on a bad config or dataset."""
    parser = argparse.ArgumentParser(prog="age-train", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="training config JSON (configs/*.json)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key; VALUE is JSON (else a string); relative paths resolve against the cwd",
    )
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, parse_overrides(args.set))
        from trainer import multiworker
        from trainer.data import load_table
        from trainer.distribute import choose_strategy, cluster_size
        from trainer.pretrained import check_pretrained

        if config.distribute != "none" and cluster_size() > 1:
            multiworker.check(config)  # a lone worker would wait for its peers before it could refuse
        strategy = choose_strategy(config.distribute)  # before check_pretrained may build a backbone
        check_pretrained(config)
        table, summary = load_table(
            config.csv_path, config.img_dir, config.start_label, config.end_label, config.clip_ages
        )
        path = train(config, table, summary, strategy=strategy)
    except ConfigError as exc:
        print(f"age-train: error: {exc}", file=sys.stderr)
        return 2
    print(f"saved: {path}" if path else "saved: (written by the chief worker)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
