"""The training data: a labelled CSV of aligned chips -> a clean table -> ID-disjoint splits -> ``tf.data``.

The table has one row per usable image with columns ``ID`` (str), ``Path`` (absolute), ``Age`` (int, years) and
``label`` (int32 rank ``Age - start_label`` in ``0 .. num_classes-1``). Batches are ``(images, labels)``:
images float32 ``(N, img_size, img_size, 3)`` RGB in 0..255 (the model scales them), labels int32 ``(N,)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import tensorflow as tf

from core.errors import ConfigError
from trainer.data.augmentation import Robustness
from trainer.data.labels import read_label_csv

REQUIRED_COLUMNS = ("ID", "Path", "Age")
# Leading bytes of the formats tf.io.decode_image reads; anything else is skipped before training starts.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
# Random crops take img_size pixels out of a resize this much larger.
DEFAULT_ZOOM = 1.12


@dataclass(frozen=True)
class DataSummary:
    """What happened to the CSV's rows; goes into the run report and the model's metadata."""

    rows: int
    used: int
    missing_image: int
    unreadable_image: int
    out_of_range: int
    clipped: int
    start_label: int
    end_label: int
    num_classes: int

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict."""
        return asdict(self)


def _looks_like_image(path: str) -> bool:
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith(_MAGIC)


def load_table(
    csv_path: Path,
    img_dir: Path,
    start_label: int | None = None,
    end_label: int | None = None,
    clip_ages: bool = False,
) -> tuple[pd.DataFrame, DataSummary]:
    """Read and clean the label CSV.

    Args:
        csv_path: CSV with at least ``ID,Path,Age`` (``Path`` relative to ``img_dir``); an optional ``scaled``
            column (``Age - start_label`` as ``age-align`` wrote it) fixes the default ``start_label``.
        img_dir: folder the ``Path`` column is relative to.
        start_label, end_label: age range in years, inclusive; default: from the data.
        clip_ages: move ages outside the range onto its ends instead of dropping those rows.
    Returns:
        the clean table (see module doc) and a :class:`DataSummary`.
    Raises:
        ConfigError: naming the column and the file for a missing column or a non-numeric age; for an empty
            dataset or a single distinct age.
    """
    where = f"csv_path {csv_path}"
    table, ages = read_label_csv(csv_path, where, REQUIRED_COLUMNS)
    rows = len(table)
    table = table.assign(Age=ages.round().astype(int), Path=[str(img_dir / p) for p in table["Path"]])
    if start_label is None:
        start_label = _start_from_scaled(table)
    exists = np.array([Path(p).is_file() for p in table["Path"]], dtype=bool)
    readable = np.array([ok and _looks_like_image(p) for ok, p in zip(exists, table["Path"], strict=True)])
    table = table[readable]
    if table.empty:
        raise ConfigError(f"{where}: no usable rows (none of the {rows} images under {img_dir} could be read)")
    start = int(table["Age"].min()) if start_label is None else start_label
    end = int(table["Age"].max()) if end_label is None else end_label
    if end <= start:
        raise ConfigError(f"{where}: column 'Age': a single distinct age ({start}); CORAL needs at least two")
    outside = (table["Age"] < start) | (table["Age"] > end)
    table = table.assign(Age=table["Age"].clip(start, end)) if clip_ages else table[~outside]
    if table.empty or table["Age"].nunique() < 2:
        raise ConfigError(f"{where}: fewer than two distinct ages within [{start}, {end}]")
    table = table.assign(label=(table["Age"] - start).astype(np.int32))[["ID", "Path", "Age", "label"]]
    summary = DataSummary(
        rows=rows,
        used=len(table),
        missing_image=int((~exists).sum()),
        unreadable_image=int((exists & ~readable).sum()),
        out_of_range=0 if clip_ages else int(outside.sum()),
        clipped=int(outside.sum()) if clip_ages else 0,
        start_label=start,
        end_label=end,
        num_classes=end - start + 1,
    )
    return table.reset_index(drop=True), summary


def _start_from_scaled(table: pd.DataFrame) -> int | None:
    """The ``start_label`` that ``age-align`` recorded as ``Age - scaled``, when the CSV has one consistent value."""
    if "scaled" not in table.columns:
        return None
    offsets = (table["Age"] - pd.to_numeric(table["scaled"], errors="coerce")).dropna().unique()
    return int(offsets[0]) if len(offsets) == 1 else None


def split_by_id(table: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
    """Split into ``train``/``val``/``test`` so that no ``ID`` appears in two splits.

    IDs (not rows) are shuffled with ``seed`` and cut by the fractions; each split's rows are shuffled too,
    so a CSV sorted by age never yields age-sorted batches. Raises ConfigError when a split would be empty.
    """
    ids = np.random.default_rng(seed).permutation(np.asarray(table["ID"].unique(), dtype=object))
    n_val = round(len(ids) * val_fraction)
    n_test = round(len(ids) * test_fraction)
    if len(ids) - n_val - n_test < 1 or n_val < 1 or n_test < 1:
        raise ConfigError(
            f"{len(ids)} distinct IDs cannot be split with val_fraction {val_fraction} and "
            f"test_fraction {test_fraction}: every split needs at least one"
        )
    groups = {"val": ids[:n_val], "test": ids[n_val : n_val + n_test], "train": ids[n_val + n_test :]}
    return {
        name: table[table["ID"].isin(set(members))].sample(frac=1.0, random_state=seed).reset_index(drop=True)
        for name, members in groups.items()
    }


def _decode(path: tf.Tensor, label: tf.Tensor, img_size: int) -> tuple[tf.Tensor, tf.Tensor]:
    raw = tf.io.read_file(path)
    image = tf.io.decode_image(raw, channels=3, expand_animations=False)
    # Chips already at img_size (the default recipe: age-align cuts them at the model's size) pass untouched, so
    # training sees exactly the pixels the service's aligner produces.
    shape = tf.shape(image)
    return tf.cond(
        tf.logical_and(tf.equal(shape[0], img_size), tf.equal(shape[1], img_size)),
        lambda: tf.ensure_shape(image, (img_size, img_size, 3)),
        lambda: tf.cast(
            tf.clip_by_value(tf.round(tf.image.resize(image, (img_size, img_size), antialias=True)), 0.0, 255.0),
            tf.uint8,
        ),
    ), label


def _augment(
    image: tf.Tensor, label: tf.Tensor, img_size: int, zoom: float, robustness: Robustness
) -> tuple[tf.Tensor, tf.Tensor]:
    # A random enlargement in [1, zoom] before the crop varies scale as well as position.
    big = tf.random.uniform((), img_size, max(img_size, round(img_size * zoom)) + 1, dtype=tf.int32)
    image = tf.image.resize(tf.cast(image, tf.float32), (big, big))
    image = tf.image.random_crop(image, (img_size, img_size, 3))
    image = tf.image.random_flip_left_right(image)
    image = tf.image.random_brightness(image, 0.08 * 255.0)
    image = tf.image.random_contrast(image, 0.85, 1.15)
    image = robustness.apply(tf.clip_by_value(image, 0.0, 255.0), img_size)
    return tf.clip_by_value(image, 0.0, 255.0), label


def _to_float(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return tf.cast(image, tf.float32), label


def make_dataset(
    table: pd.DataFrame,
    img_size: int,
    batch_size: int,
    training: bool,
    augment: bool = True,
    cache: str = "memory",
    cache_path: Path | None = None,
    seed: int = 0,
    zoom: float = DEFAULT_ZOOM,
    robustness: Robustness | None = None,
) -> tf.data.Dataset:
    """Batches of ``(float32 (N, img_size, img_size, 3) in 0..255, int32 (N,) ranks)`` from a clean table.

    Decoding runs in parallel; images that fail to decode are dropped, never raised mid-epoch. The decoded
    uint8 chips are cached (``"memory"``, or ``"disk"`` at ``cache_path``) before any augmentation, so each
    epoch only re-shuffles (training), augments (training and ``augment``: random zoom-crop, flip, brightness and
    contrast, then the :class:`Robustness` degradations), batches and prefetches.
    """
    paths = table["Path"].to_numpy(dtype=str)
    labels = table["label"].to_numpy(dtype=np.int32)
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    ds = ds.map(lambda p, y: _decode(p, y, img_size), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.ignore_errors()
    if cache == "memory":
        ds = ds.cache()
    elif cache == "disk":
        if cache_path is None:
            raise ValueError("cache='disk' needs a cache_path")
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        ds = ds.cache(str(cache_path))
    if training:
        ds = ds.shuffle(min(len(table), 10_000), seed=seed, reshuffle_each_iteration=True)
    if training and augment:
        extra = robustness or Robustness()
        ds = ds.map(lambda x, y: _augment(x, y, img_size, zoom, extra), num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE)
    options = tf.data.Options()
    # The source is a list of file names in memory, not files to hand out: multi-worker runs shard elements.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)
