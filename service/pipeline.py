"""One photo through the service: decode, find the faces (or take the photo as a chip), batch them, build the body.

``POST /predict`` and each item of ``POST /predict/batch`` run exactly this, so the two answer the same JSON for the
same photo. Decoding and dlib alignment run in the detection pool, the model in the micro-batcher's thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Query
from PIL import Image
from prometheus_client import Histogram

from core.errors import NoFaceError
from core.image import Decoded, decode_reduced
from service.alignment import AlignedFace, Aligner, full_size_box
from service.options import AnswerOptions
from service.runtime import Runtime, ServedModel
from service.schemas import PredictResponse

T = TypeVar("T")

AlignedQuery = Annotated[
    bool,
    Query(
        description="the upload is already a face chip (as age-align writes them): no detection, resized to the "
        "model's chip size, box = the whole image"
    ),
]


def _timed(histogram: Histogram, work: Callable[..., T], *args: Any) -> T:
    started = time.perf_counter()
    try:
        return work(*args)
    finally:
        histogram.observe(time.perf_counter() - started)


def whole_image_chip(rgb: np.ndarray, size: int) -> tuple[list[tuple[int, int, int, int]], np.ndarray]:
    """An aligned chip ``(H, W, 3)`` uint8 as the model's input ``(1, size, size, 3)`` (bilinear, antialiased when
    shrinking, as ``age-train`` resizes larger chips) and its box, the whole image ``(0, 0, W-1, H-1)``."""
    height, width = rgb.shape[:2]
    chip = (
        rgb
        if (height, width) == (size, size)
        else np.asarray(Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR))
    )
    return [(0, 0, width - 1, height - 1)], chip[np.newaxis]


def _decode_and_align(
    decode: Histogram,
    detect: Histogram,
    data: bytes,
    max_pixels: int,
    side: int | None,
    aligner: Aligner,
    aligned: bool,
) -> tuple[Decoded, Sequence[AlignedFace]]:
    """Decode ``data`` and, unless it is already a chip (``aligned``), find its faces; each stage timed."""
    decoded = _timed(decode, decode_reduced, data, max_pixels, side)
    return decoded, () if aligned else _timed(detect, aligner.align, decoded.rgb)


async def answer(
    runtime: Runtime, aligner: Aligner, data: bytes, options: AnswerOptions, aligned: bool = False
) -> PredictResponse:
    """The ``POST /predict`` body for the image ``data``; ``core`` errors (bad image, no face) propagate.

    The whole request runs on the model serving when it began, even if a new version is swapped in meanwhile.
    """
    with runtime.use() as served:
        return await _answer_on(served, runtime, aligner, data, options, aligned)


async def _answer_on(
    served: ServedModel, runtime: Runtime, aligner: Aligner, data: bytes, options: AnswerOptions, aligned: bool
) -> PredictResponse:
    settings, metrics = runtime.settings, runtime.metrics
    predictor, batcher = served.predictor, served.batcher
    loop = asyncio.get_running_loop()
    decode = metrics.stage_seconds.labels(stage="decode")
    detect = metrics.stage_seconds.labels(stage="detect")
    boxes: Sequence[Sequence[int]]
    with batcher.expecting():
        # A large photo is decoded reduced (JPEG at 1/2..1/8 scale by draft): detection never looks at the rest.
        side = None if aligned else settings.decode_side
        # Decoding and detection share one trip to the pool: each hand-off costs the event loop and the GIL.
        decoded, found = await loop.run_in_executor(
            runtime.detect_pool, _decode_and_align, decode, detect, data, settings.max_pixels, side, aligner, aligned
        )
        rgb = decoded.rgb
        if aligned:
            boxes, chips = whole_image_chip(rgb, predictor.img_size)
        else:
            faces = found
            metrics.faces_per_image.observe(len(faces))
            if not faces:
                raise NoFaceError(
                    "no face found in the image; send a photo with a clearly visible, roughly frontal face"
                )
            faces = list(faces)[: settings.max_faces]
            boxes = [full_size_box(face.box, decoded.factor, decoded.full_size) for face in faces]
            chips = np.stack([face.chip for face in faces])
        logits = batcher.enqueue(chips)
    return predictor.response(boxes, await logits, options)
