"""A model over batches: ``(images, targets)`` in, logits or predicted ages out; and the batches themselves, from
aligned chips (``aligned_batches``) or from photos aligned as the model's metadata says (``image_batches``)."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
from tqdm import tqdm

from core.coral import labels_from_probas, probas_from_logits
from core.errors import ImageError
from core.face import FaceAligner
from core.image import read_image
from trainer.data.dataset import make_dataset


def predict_logits(
    model: Any, batches: Iterable[tuple[Any, Any]], progress: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``(images, targets)`` batches; return ``(targets (N,), logits (N, K-1) float32)``."""
    targets, logits = [], []
    for images, batch_targets in tqdm(batches, unit="batch", file=sys.stderr, disable=not progress):
        logits.append(np.asarray(model.predict_on_batch(images), dtype=np.float32))
        targets.append(np.asarray(batch_targets).reshape(-1))
    if not targets:
        return np.zeros(0), np.zeros((0, int(model.output_shape[-1])), dtype=np.float32)
    return np.concatenate(targets), np.concatenate(logits)


def predict_batches(
    model: keras.Model, batches: Iterable[tuple[Any, Any]], start_label: int, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``(images, targets)`` batches; return ``(targets, predicted ages)`` as 1-D arrays.

    Targets come back from the batches themselves, so rows a dataset dropped (undecodable images) cannot
    misalign predictions and truths. Predicted age = ``start_label`` + rank.
    """
    targets, logits = predict_logits(model, batches)
    return targets, start_label + labels_from_probas(probas_from_logits(logits), threshold)


def aligned_batches(table: pd.DataFrame, img_size: int, batch_size: int) -> tuple[Iterable[Any], int, int]:
    """``(batches, rows with a file, rows without)`` for chips listed in ``table`` (``Path``, ``Age``), resized to
    ``img_size``; batches yield ``(images, row positions in table)`` and drop undecodable files on the fly."""
    exists = table["Path"].map(lambda p: Path(p).is_file()).to_numpy(dtype=bool)
    usable = table[exists].assign(label=np.flatnonzero(exists).astype(np.int32))
    batches = make_dataset(usable, img_size, batch_size, training=False, cache="none")
    return batches, len(usable), int((~exists).sum())


def _raw_chips(
    table: pd.DataFrame, metadata: dict[str, Any], batch_size: int, counts: dict[str, int]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Align each raw image (largest face); yield ``(float32 chips, row positions)`` batches, counting misses."""
    aligner = FaceAligner.from_metadata(metadata)
    chips: list[np.ndarray] = []
    rows: list[int] = []
    for row, path in tqdm(enumerate(table["Path"]), total=len(table), file=sys.stderr):
        try:
            faces = aligner.align(read_image(path))
        except (ImageError, OSError):
            counts["unreadable"] += 1
            continue
        if not faces:
            counts["no_face"] += 1
            continue
        chips.append(faces[0].chip)
        rows.append(row)
        if len(chips) == batch_size:
            yield np.stack(chips).astype(np.float32), np.asarray(rows)
            chips, rows = [], []
    if chips:
        yield np.stack(chips).astype(np.float32), np.asarray(rows)


def _counted(batches: Iterable[Any], usable: int, counts: dict[str, int]) -> Iterator[Any]:
    seen = 0
    for images, rows in batches:
        seen += len(rows)
        yield images, rows
    counts["unreadable"] += usable - seen  # dropped on the fly: present but undecodable


def image_batches(
    table: pd.DataFrame, metadata: dict[str, Any], aligned: bool, batch_size: int
) -> tuple[Iterable[tuple[Any, Any]], dict[str, int]]:
    """``(batches of (images, row positions in table), counts)``: chips resized (``aligned``) or photos aligned as
    the model's metadata says; ``counts`` (``no_face``, ``unreadable``) is complete once the batches are consumed."""
    counts = {"no_face": 0, "unreadable": 0}
    if not aligned:
        return _raw_chips(table, metadata, batch_size, counts), counts
    batches, usable, counts["unreadable"] = aligned_batches(table, int(metadata["img_size"]), batch_size)
    return _counted(batches, usable, counts), counts
