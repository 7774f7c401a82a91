"""The work of ``age-batch``'s Ray Data stages, one chunk of photos (a dataset row) at a time.

- :class:`AlignStage` (CPU actors): read each photo's bytes, decode it with ``core.image`` (the service's limits,
  reduced to ``decode_side`` as the service decodes), align its faces with one ``core.face.FaceAligner`` per actor.
- :class:`ModelStage` (GPU actors when there are GPUs, else CPU): the chunk's face chips through the engine
  ``core.engine.load_engine`` picks, then the ages (``batch.model.AgeDecoder``).
- :class:`WriteStage` (an actor): the chunk's rows as one Parquet part (``batch.output``), and a count for the driver.

A chunk row carries ``part`` (its part's name), ``paths`` in; ``records`` (JSON: per face ``path``, ``face``,
``box``; per unscored photo ``path``, ``error``), ``chips`` (the faces' chips as raw ``uint8`` bytes, in record
order), then ``logits`` and ``ages`` (raw ``float32`` / ``int64`` bytes) travel between the stages: plain columns,
so Ray's object store moves them without pickling.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections import Counter
from typing import Any

import numpy as np

from batch.inputs import Reader
from batch.model import AgeDecoder, ModelFile
from batch.output import table, write_part
from core.artifact import read_metadata
from core.errors import AgeEstimationError, NoFaceError
from core.face import FaceAligner, full_size_box
from core.image import DEFAULT_MAX_PIXELS, decode_reduced

__all__ = ["AlignStage", "ModelStage", "WriteStage", "error_code"]

logger = logging.getLogger(__name__)

DECODE_SIDE = 1536
"""Photos are decoded reduced to at least this longest side, as the service's ``DECODE_SIDE`` default: the
aligner searches at most 1024 pixels, and chips lose nothing measurable (``bench/bench_align.py``)."""
MAX_FACES = 100
"""Faces scored per photo, largest first, as the service's ``MAX_FACES`` default."""


def error_code(exc: BaseException) -> str:
    """The stable snake_case code of an error row: a ``core`` error's own ``code`` (``corrupt_image``,
    ``unsupported_image``, ``image_too_large``, ``image_too_complex``, ``no_face``: the service's), else
    ``unreadable_file`` for a file that cannot be read, ``internal_error`` for anything else."""
    if isinstance(exc, AgeEstimationError):
        return exc.code
    return "unreadable_file" if isinstance(exc, OSError) else "internal_error"


def _message(exc: BaseException) -> str:
    return f"{error_code(exc)}: {' '.join(str(exc).split()) or type(exc).__name__}"


class AlignStage:
    """Ray actor: photo names in, face records and chips out (one ``FaceAligner``, loaded once per actor)."""

    def __init__(self, metadata: dict[str, Any], decode_side: int = DECODE_SIDE, max_faces: int = MAX_FACES) -> None:
        self.aligner = FaceAligner.from_metadata(metadata, max_faces)
        self.decode_side = decode_side
        self.reader = Reader()

    def photo(self, path: str) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
        """The records and chips of one photo: one per face, largest first, or one error record and none."""
        try:
            decoded = decode_reduced(self.reader.read(path), DEFAULT_MAX_PIXELS, self.decode_side)
            faces = self.aligner.align(decoded.rgb)
            if not faces:
                raise NoFaceError("no face found in the image")
        except (AgeEstimationError, OSError) as exc:
            return [{"path": path, "error": _message(exc)}], []
        except Exception as exc:
            # One photo that trips a bug must not stop an archive of millions; its row names what happened.
            logger.exception("%s: unexpected error", path)
            return [{"path": path, "error": _message(exc)}], []
        records = [
            {"path": path, "face": index, "box": list(full_size_box(face.box, decoded.factor, decoded.full_size))}
            for index, face in enumerate(faces)
        ]
        return records, [face.chip for face in faces]

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each chunk row's ``paths`` to its ``records`` and ``chips``."""
        records_out, chips_out = [], []
        for paths in batch["paths"]:
            records: list[dict[str, Any]] = []
            chips: list[np.ndarray] = []
            for path in paths:
                photo_records, photo_chips = self.photo(str(path))
                records += photo_records
                chips += photo_chips
            records_out.append(json.dumps(records))
            chips_out.append(np.stack(chips).tobytes() if chips else b"")
        return {"part": batch["part"], "records": np.array(records_out), "chips": _objects(chips_out)}


class ModelStage:
    """Ray actor: a chunk's chips in, CORAL logits and ages out; the engine loads once per actor.

    ``shipped`` is ``[ObjectRef]`` of the model file's bytes (in a list, so that Ray fetches them only on a machine
    where the driver's file is missing) or empty.
    """

    def __init__(
        self, model: ModelFile, shipped: list[Any], coverage: float, runtime: str, precision: str, threads: int
    ) -> None:
        import ray

        from core.engine import load_engine

        fetch = (lambda: ray.get(shipped[0])) if shipped else None
        path = model.local_copy(fetch)
        metadata = read_metadata(path)
        self.engine = load_engine(path, runtime, precision, threads)
        self.size = int(metadata["img_size"])
        self.decoder = AgeDecoder.from_metadata(metadata, coverage)
        # The first call traces the network: part of the actor's start-up, not of its first chunk.
        self.decoder.ages(self.engine.logits(np.zeros((1, self.size, self.size, 3), dtype=np.uint8)))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each chunk row's ``chips`` to its ``logits`` and ``ages`` (one model call for the whole batch)."""
        size = self.size
        per_row = [np.frombuffer(raw, dtype=np.uint8).reshape(-1, size, size, 3) for raw in batch["chips"]]
        counts = [len(chips) for chips in per_row]
        logits = self.engine.logits(np.concatenate(per_row)) if sum(counts) else np.zeros((0, 1), np.float32)
        ages = self._ages(logits)
        spans = list(itertools.pairwise(np.cumsum([0, *counts])))
        return {
            "part": batch["part"],
            "records": batch["records"],
            "logits": _objects([logits[a:b].astype(np.float32).tobytes() for a, b in spans]),
            "ages": _objects([ages[a:b].astype(np.int64).tobytes() for a, b in spans]),
        }

    def _ages(self, logits: np.ndarray) -> np.ndarray:
        if len(logits) == 0:
            return np.zeros((0, 3), dtype=np.int64)
        ages = self.decoder.ages(logits)
        return np.stack([ages.result_value, ages.low, ages.high], axis=1)


class WriteStage:
    """Ray actor: each chunk's rows as its Parquet part; per chunk, its photo, face and error counts (``errors``
    JSON) for the driver. An actor rather than tasks: a task would wait for a fresh worker process every time."""

    def __init__(self, output: str, fixed: dict[str, Any]) -> None:
        self.output = output
        self.fixed = fixed

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        photos, faces, errors = [], [], []
        for part, records_json, raw_logits, raw_ages in zip(
            batch["part"], batch["records"], batch["logits"], batch["ages"], strict=True
        ):
            records = json.loads(records_json)
            ages = np.frombuffer(raw_ages, dtype=np.int64).reshape(-1, 3)
            logits = np.frombuffer(raw_logits, dtype=np.float32)
            logits = logits.reshape(len(ages), -1) if len(ages) else np.zeros((0, 0), np.float32)
            write_part(self.output, str(part), table(records, logits, ages, self.fixed))
            photos.append(len({record["path"] for record in records}))
            faces.append(len(ages))
            codes = Counter(record["error"].split(":")[0] for record in records if record.get("error"))
            errors.append(json.dumps(codes))
        return {"photos": np.array(photos), "faces": np.array(faces), "errors": np.array(errors)}


def _objects(values: list[bytes]) -> np.ndarray:
    """A 1-D object array of ``values`` (``np.array`` of equal-length bytes would make a fixed-width ``S`` array)."""
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array
