"""Face alignment for inference: a ``core.face.FaceAligner`` per worker thread, configured by the model file.

``FaceAligner`` serialises its dlib calls under one lock, while dlib's HOG detector releases the GIL (measured by
``bench/bench_threads.py``: a Python thread keeps running during a long ``hog.run`` call); one aligner per thread
therefore lets the detection pool use every core. The aligner's parameters come from the model's metadata
(``img_size``, ``chip_padding`` and optionally ``detector``, ``upsample``) so that chips are cut exactly as the
training set's were.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np

from core.face import FaceAligner, full_size_box

__all__ = ["AlignedFace", "Aligner", "ThreadLocalAligner", "aligner_from_metadata", "full_size_box"]


class AlignedFace(Protocol):
    """What the service reads from a face: ``box`` ``(left, top, right, bottom)`` and ``chip`` ``(S, S, 3)`` uint8."""

    @property
    def box(self) -> tuple[int, int, int, int]: ...

    @property
    def chip(self) -> np.ndarray: ...


class Aligner(Protocol):
    """Anything that turns an RGB uint8 image ``(H, W, 3)`` into its faces, largest first."""

    def align(self, rgb: np.ndarray) -> Sequence[AlignedFace]: ...


class ThreadLocalAligner:
    """An ``Aligner`` that builds one underlying aligner per calling thread, on that thread's first call.

    The first one is built in the constructor, so a missing dlib model file fails at start-up, not on a request.
    """

    def __init__(self, factory: Callable[[], Aligner]) -> None:
        self._factory = factory
        self._local = threading.local()
        self._local.aligner = factory()

    def align(self, rgb: np.ndarray) -> Sequence[AlignedFace]:
        aligner = getattr(self._local, "aligner", None)
        if aligner is None:
            aligner = self._local.aligner = self._factory()
        return aligner.align(rgb)


def aligner_from_metadata(metadata: dict[str, Any], max_faces: int | None = None) -> ThreadLocalAligner:
    """The aligner a model was trained for, from its metadata (``img_size``, ``chip_padding``, ``detector``, ...).

    ``max_faces`` cuts the detections (largest first) before landmarks and chips, so it bounds the work per photo.
    """
    return ThreadLocalAligner(functools.partial(FaceAligner.from_metadata, metadata, max_faces))
