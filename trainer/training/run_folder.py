"""The run folder of ``age-train``: its name, the ID-disjoint split CSVs, ``config.json`` and the data summary.

``prepare(config, table, summary)`` picks the folder (the newest resumable one with ``resume``), writes or re-reads
the split and records the resolved config, and returns a :class:`Run` that the later steps read from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd

from trainer.data.dataset import DataSummary, split_by_id
from trainer.training.config import TrainConfig, resolve_alignment

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Run:
    """One run: its folder, the timestamp in its file names, its splits and how the chips were cut."""

    run_dir: Path
    stamp: str
    splits: dict[str, pd.DataFrame]
    summary: DataSummary
    alignment: dict[str, Any]


def timestamp() -> str:
    """Local time as ``YYYYmmdd-HHMMSS``, used in run folder and model file names."""
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def fill_run_dir(config: TrainConfig, stamp: str) -> Path:
    """``run_dir`` with its ``{model_prefix}``, ``{arch_type}``, ``{arch_subtype}``, ``{timestamp}`` filled."""
    return Path(
        str(config.run_dir).format(
            model_prefix=config.model_prefix,
            arch_type=config.arch_type,
            arch_subtype=config.arch_subtype,
            timestamp=stamp,
        )
    )


def pick_run_dir(config: TrainConfig, stamp: str) -> Path:
    """The run folder: with ``resume`` and a ``{timestamp}`` in ``run_dir``, the newest matching run that has a
    last-epoch checkpoint; otherwise ``run_dir`` filled with ``stamp``."""
    if config.resume and "{timestamp}" in str(config.run_dir):
        pattern = fill_run_dir(config, "*")
        runs = [p.parent.parent for p in pattern.parent.glob(f"{pattern.name}/checkpoints/training_metadata.json")]
        if runs:
            return max(runs, key=lambda run: run.stat().st_mtime)
    return fill_run_dir(config, stamp)


def prepare_splits(config: TrainConfig, table: pd.DataFrame, run_dir: Path) -> dict[str, pd.DataFrame]:
    """The ID-disjoint splits: re-read from the run folder when resuming, else drawn and written there."""
    files = {name: run_dir / f"{name}.csv" for name in SPLITS}
    if config.resume and all(path.is_file() for path in files.values()):
        return {name: pd.read_csv(path, dtype={"ID": str}) for name, path in files.items()}
    splits = split_by_id(table, config.val_fraction, config.test_fraction, config.split_seed_or_seed)
    for name, frame in splits.items():
        frame.to_csv(files[name], index=False)
    return splits


def prepare(config: TrainConfig, table: pd.DataFrame, summary: DataSummary) -> Run:
    """Create (or, resuming, reopen) the run folder, write its split and resolved config; print what it holds."""
    stamp = timestamp()
    run_dir = pick_run_dir(config, stamp)
    run_dir.mkdir(parents=True, exist_ok=True)
    print(f"run folder: {run_dir}")
    print("data: " + ", ".join(f"{key} {value}" for key, value in summary.as_dict().items()))
    splits = prepare_splits(config, table, run_dir)
    print("split: " + ", ".join(f"{name} {len(frame)}" for name, frame in splits.items()))
    run = Run(run_dir, stamp, splits, summary, resolve_alignment(config))
    _write_config(config, run)
    return run


def _write_config(config: TrainConfig, run: Run) -> None:
    resolved = config.model_dump(mode="json") | {"run_dir": str(run.run_dir)} | run.alignment
    text = json.dumps(resolved, indent=2)
    (run.run_dir / "config.json").write_text(text + "\n")
    (run.run_dir / "data_summary.json").write_text(json.dumps(run.summary.as_dict(), indent=2) + "\n")
    if config.logs:
        import tensorflow as tf

        with tf.summary.create_file_writer(str(run.run_dir / "logs" / "config")).as_default():
            tf.summary.text("config", f"```\n{text}\n```", step=0)


def shown_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, so a shipped model names no home folder."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def read_history(history_csv: Path) -> pd.DataFrame:
    """Per-epoch logs written by ``keras.callbacks.CSVLogger``; an epoch logged twice (resume) keeps its last row."""
    if not history_csv.is_file():
        return pd.DataFrame()
    history = pd.read_csv(history_csv)
    return history.drop_duplicates("epoch", keep="last").sort_values("epoch").reset_index(drop=True)
