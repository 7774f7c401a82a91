"""The model side of ``age-batch``: which file, its id, where each worker finds it, and the answer per face.

The answer is the service's (``service.predictor.Predictor.faces``), computed with the same ``core`` functions:
``result_value`` from the CORAL probabilities at the model's threshold (``core.coral``, Cao et al. 2020,
arXiv:1901.07884), ``age_interval`` the central interval holding ``coverage`` of the age distribution, calibrated
split-conformally when the model file carries a calibration (``core.distribution``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from core.artifact import file_sha256, model_id, read_metadata
from core.calibration import Calibration, interval_mass
from core.distribution import central_interval, labels_from_probas, probas_from_logits

__all__ = ["DEFAULT_COVERAGE", "DEFAULT_MODEL", "AgeDecoder", "Ages", "ModelFile"]

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "models" / "default.h5"
"""The shipped model, found from the package so that the working folder does not matter."""
DEFAULT_COVERAGE = 0.9
"""The share of faces whose true age ``age_interval`` should hold, as the service's default."""


@dataclass(frozen=True)
class ModelFile:
    """A model file as the driver saw it: its path, SHA-256, ``model_id`` and metadata."""

    path: str
    sha256: str
    id: str
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, path: str | os.PathLike[str]) -> ModelFile:
        """Read the metadata (h5py only) and hash the file; ``ModelFileError`` when it is not a usable model file.

        The id is the service's for the same file (``core.artifact.model_id`` of the file's stem and hash).
        """
        metadata = read_metadata(path)
        sha256 = file_sha256(path)
        return cls(str(Path(path).resolve()), sha256, model_id(Path(path).stem, sha256), metadata)

    def local_copy(self, fetch: Callable[[], bytes] | None = None) -> Path:
        """The file to load on this machine: the driver's path when it holds the same bytes (one machine, or an
        image with the model baked in), else the bytes ``fetch`` returns (shipped through Ray's object store),
        written once to a private temporary folder under the file's hash."""
        own = Path(self.path)
        if own.is_file() and file_sha256(own) == self.sha256:
            return own
        if fetch is None:
            raise FileNotFoundError(f"{self.path}: not on this machine and no copy was shipped")
        folder = Path(tempfile.gettempdir()) / f"age-batch-{os.getuid()}"
        folder.mkdir(mode=0o700, exist_ok=True)
        target = folder / f"{self.sha256}.h5"
        if not target.is_file():
            fd, partial = tempfile.mkstemp(dir=folder, suffix=".part")
            with os.fdopen(fd, "wb") as handle:
                handle.write(fetch())
            os.replace(partial, target)
        return target


@dataclass(frozen=True)
class Ages:
    """Per face (arrays of N): ``result_value``, ``age_interval`` bounds ``low`` and ``high`` (inclusive), years."""

    result_value: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class AgeDecoder:
    """CORAL logits ``(N, K-1)`` to ages, with the model's ``start_label`` and threshold and its calibration."""

    start_label: int
    threshold: float
    calibration: Calibration | None
    coverage: float = DEFAULT_COVERAGE

    @classmethod
    def from_metadata(cls, metadata: dict[str, Any], coverage: float = DEFAULT_COVERAGE) -> AgeDecoder:
        """The decoder of a model file's metadata; ``coverage`` in (0, 1)."""
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must lie in (0, 1), got {coverage}")
        return cls(
            int(metadata["start_label"]), float(metadata["threshold"]), Calibration.from_metadata(metadata), coverage
        )

    @property
    def calibrated(self) -> bool:
        """Whether the intervals are calibrated (the model file carries a calibration)."""
        return self.calibration is not None

    def ages(self, logits: np.ndarray) -> Ages:
        """The ages of ``logits`` ``(N, K-1)``."""
        probas = probas_from_logits(logits)
        ranks = labels_from_probas(probas, self.threshold)
        lows, highs = central_interval(probas, interval_mass(self.calibration, self.coverage, probas))
        start = self.start_label
        return Ages(
            start + np.asarray(ranks, dtype=np.int64), start + lows.astype(np.int64), start + highs.astype(np.int64)
        )
