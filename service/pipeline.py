"""One photo through the service: decode, find the faces (or take the photo as a chip), batch them, build the body.

``POST /predict`` and each item of ``POST /predict/batch`` run exactly this, so the two answer the same JSON for the
same photo. Decoding and dlib alignment run in the detection pool, the model in the micro-batcher's thread.

The CPU budget of one photo: the decode runs in a process killed past ``DECODE_TIMEOUT_S`` or when the request is
cancelled (``service.decoding``); detection looks at a copy of at most ``DECODE_SIDE`` pixels a side and analyses
at most ``MAX_FACES`` faces, so its cost is bounded by those settings rather than by the upload. The photo's pixels
are charged to ``MAX_INFLIGHT_PIXELS`` from its header before anything is decoded.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Query
from PIL import Image
from prometheus_client import Histogram

from core.errors import ImageError, NoFaceError
from core.image import Decoded, decode_reduced, image_size
from service.alignment import AlignedFace, Aligner, full_size_box
from service.detection import DetectionPool
from service.options import AnswerOptions
from service.runtime import Runtime, ServedModel
from service.schemas import PredictResponse

T = TypeVar("T")

logger = logging.getLogger(__name__)

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


def _admit_and_decode(
    held: contextlib.ExitStack,
    pool: object,
    data: bytes,
    max_pixels: int,
    side: int | None,
    scans: int,
    cancelled: threading.Event,
) -> Decoded:
    """Charge the photo's pixels (from its header) to the pool's budget, held by ``held``, then decode it in a
    worker process; a plain pool (tests) decodes in the thread."""
    width, height = image_size(data)
    if isinstance(pool, DetectionPool):
        held.enter_context(pool.pixels.holding(width * height))
        return pool.decoders.decode(data, max_pixels, side, scans, cancelled)
    return decode_reduced(data, max_pixels, side, scans)


def _decode_and_align(
    runtime: Runtime, data: bytes, aligner: Aligner, aligned: bool, cancelled: threading.Event
) -> tuple[Decoded, Sequence[AlignedFace]]:
    """Decode ``data`` (within the CPU and pixel budgets) and, unless it is already a chip (``aligned``), find its
    faces; each stage timed. Image errors are logged here, on one line: this is the decoder boundary."""
    settings, stage = runtime.settings, runtime.metrics.stage_seconds
    side = None if aligned else settings.decode_side
    try:
        # The pixels stay charged until detection is done with them.
        with contextlib.ExitStack() as held:
            args = (held, runtime.detect_pool, data, settings.max_pixels, side, settings.max_jpeg_scans, cancelled)
            decoded = _timed(stage.labels(stage="decode"), _admit_and_decode, *args)
            return decoded, () if aligned else _timed(stage.labels(stage="detect"), aligner.align, decoded.rgb)
    except ImageError as exc:
        logger.info("refused an upload of %d bytes: %s: %s", len(data), exc.code, exc)
        raise


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
    boxes: Sequence[Sequence[int]]
    cancelled = threading.Event()
    with batcher.expecting():
        # A large photo is decoded reduced (JPEG at 1/2..1/8 scale by draft): detection never looks at the rest.
        # Decoding and detection share one trip to the pool: each hand-off costs the event loop and the GIL.
        try:
            decoded, found = await loop.run_in_executor(
                runtime.detect_pool, _decode_and_align, runtime, data, aligner, aligned, cancelled
            )
        except asyncio.CancelledError:
            # The client left or the server stops: the decode process working for nobody is killed.
            cancelled.set()
            raise
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
