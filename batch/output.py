"""The Parquet dataset ``age-batch`` writes, and what makes a rerun exactly-once.

``OUTPUT`` is a folder (local, or a URI pyarrow opens) of parts ``part-<key>.parquet`` with :data:`SCHEMA`: one row
per face, or one row with ``face`` null and ``error`` set (``"<code>: <message>"``) per photo that could not be
scored. Any Parquet reader takes the folder as one table (files starting with ``_`` or ``.`` are not data).

Exactly once. The photos still to score are cut, in sorted order, into chunks of ``--batch-size``; a chunk is the
unit of work and of output: its part is named by a hash of its photo names (:func:`part_name`), holds every row of
every photo in it, and appears whole or not at all (written under ``_temporary/`` and renamed into place on a
local disk; on an object store a single PUT is atomic by itself). A rerun reads the ``path`` column of the parts
present, skips those photos and cuts the rest into new chunks, so a photo is never in two parts. A retried task
rewrites the same name with the same rows. Two runs writing to one folder at the same time are not supported.
"""

from __future__ import annotations

import functools
import hashlib
import re
import uuid
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from batch.inputs import open_location
from core.errors import ConfigError

__all__ = [
    "PART_PATTERN",
    "SCHEMA",
    "TEMPORARY",
    "chunks",
    "clear_temporary",
    "committed",
    "part_name",
    "table",
    "write_part",
]

SCHEMA = pa.schema(
    [
        pa.field("path", pa.string(), nullable=False),
        pa.field("face", pa.int32()),
        pa.field("box", pa.list_(pa.int32())),
        pa.field("result_value", pa.int32()),
        pa.field("age_interval", pa.list_(pa.int32())),
        pa.field("coverage", pa.float64()),
        pa.field("calibrated", pa.bool_()),
        pa.field("raw_logits", pa.list_(pa.float32())),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("error", pa.string()),
    ]
)
"""One row per face (``face`` 0 = largest, ``box`` ``[left, top, right, bottom]`` in the photo's pixels,
``age_interval`` ``[low, high]`` years inclusive, ``raw_logits`` the K-1 CORAL logits) or per unscored photo."""

PART_PATTERN = re.compile(r"part-[0-9a-f]{24}\.parquet")
"""The name of a committed part (:func:`part_name`)."""
TEMPORARY = "_temporary"
"""Sub-folder of ``OUTPUT`` where parts are written before the rename that commits them."""


def part_name(paths: Sequence[str]) -> str:
    """``part-<24 hex>.parquet``, from the photo names of a chunk: the same chunk always gets the same name."""
    digest = hashlib.sha256("\n".join(paths).encode("utf-8")).hexdigest()[:24]
    return f"part-{digest}.parquet"


def chunks(paths: Sequence[str], size: int) -> list[dict[str, Any]]:
    """``paths`` (sorted) cut into chunks of ``size``: ``{"part": name, "paths": [...]}`` each."""
    ordered = sorted(paths)
    return [
        {"part": part_name(ordered[start : start + size]), "paths": ordered[start : start + size]}
        for start in range(0, len(ordered), size)
    ]


@functools.cache
def _folder(output: str) -> tuple[pafs.FileSystem, str]:
    filesystem, path, _ = open_location(output)
    return filesystem, path.rstrip("/")


def committed(output: str, model_id: str) -> set[str]:
    """The photo names that the parts already in ``output`` hold (empty when there is no such folder yet).

    Raises ``ConfigError`` when those rows came from another model: one dataset, one model.
    """
    filesystem, folder = _folder(output)
    if filesystem.get_file_info(folder).type != pafs.FileType.Directory:
        return set()
    parts = [
        entry.path
        for entry in filesystem.get_file_info(pafs.FileSelector(folder))
        if entry.type == pafs.FileType.File
        and entry.base_name.startswith("part-")
        and entry.base_name.endswith(".parquet")
    ]
    if not parts:
        return set()
    written = pads.dataset(parts, format="parquet", filesystem=filesystem).to_table(columns=["path", "model_id"])
    others = sorted(set(written.column("model_id").unique().to_pylist()) - {model_id})
    if others:
        raise ConfigError(
            f"{output} holds rows of model {others[0]}, not {model_id}; rerun with that model or use a new folder"
        )
    return set(written.column("path").unique().to_pylist())


def clear_temporary(output: str) -> None:
    """Remove parts a killed run left half-written (call before a run starts, never during one)."""
    filesystem, folder = _folder(output)
    if filesystem.get_file_info(f"{folder}/{TEMPORARY}").type == pafs.FileType.Directory:
        filesystem.delete_dir(f"{folder}/{TEMPORARY}")


def table(records: Iterable[dict[str, Any]], logits: np.ndarray, ages: np.ndarray, fixed: dict[str, Any]) -> pa.Table:
    """The rows of one chunk.

    Args:
        records: per row, ``path`` plus either ``face`` and ``box`` or ``error``; face rows in the order of
            ``logits`` ``(F, K-1)`` float32 and ``ages`` ``(F, 3)`` (``result_value``, interval low, high).
        fixed: ``model_id``, ``coverage`` and ``calibrated``, the same for every face row.
    """
    columns: dict[str, list[Any]] = {field.name: [] for field in SCHEMA}
    face = 0
    for record in records:
        is_face = record.get("error") is None
        columns["path"].append(record["path"])
        columns["face"].append(record.get("face"))
        columns["box"].append(record.get("box"))
        columns["error"].append(record.get("error"))
        columns["model_id"].append(fixed["model_id"])
        columns["result_value"].append(int(ages[face, 0]) if is_face else None)
        columns["age_interval"].append([int(ages[face, 1]), int(ages[face, 2])] if is_face else None)
        columns["coverage"].append(fixed["coverage"] if is_face else None)
        columns["calibrated"].append(fixed["calibrated"] if is_face else None)
        columns["raw_logits"].append(logits[face].tolist() if is_face else None)
        face += is_face
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def write_part(output: str, name: str, rows: pa.Table) -> None:
    """Commit ``rows`` as the part ``name`` of ``output``: readers see all of it or nothing."""
    filesystem, folder = _folder(output)
    final = f"{folder}/{name}"
    if filesystem.type_name != "local":
        filesystem.create_dir(folder, recursive=True)
        pq.write_table(rows, final, filesystem=filesystem)
        return
    filesystem.create_dir(f"{folder}/{TEMPORARY}", recursive=True)
    partial = f"{folder}/{TEMPORARY}/{name}.{uuid.uuid4().hex}"
    pq.write_table(rows, partial, filesystem=filesystem)
    filesystem.move(partial, final)
