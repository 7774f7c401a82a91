"""service.decoding: the decode worker processes stop at the deadline, on cancellation and on a crash."""

from __future__ import annotations

import io
import os
import signal
import threading
from collections.abc import Iterator
from functools import cache

import numpy as np
import pytest
from PIL import Image

from core.errors import ImageTooComplexError, UnreadableImageError, UnsupportedImageError
from service.decoding import DecodeWorkers
from tests.hostile import scan_bomb


@cache
def _slow() -> bytes:
    """About 8 s of CPU to decode: far beyond the deadlines below (2 s, or a cancellation)."""
    return scan_bomb(side=1000, scans=120_000)


@pytest.fixture(scope="module")
def workers() -> Iterator[DecodeWorkers]:
    pool = DecodeWorkers(1, timeout_s=2.0)
    yield pool
    pool.close()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((30, 40, 3), 7, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_worker_decodes_like_core(workers: DecodeWorkers) -> None:
    decoded = workers.decode(_png(), 10**6, None, 100, threading.Event())
    assert decoded.rgb.shape == (30, 40, 3)
    assert int(decoded.rgb[0, 0, 0]) == 7


def test_core_errors_come_back_as_themselves(workers: DecodeWorkers) -> None:
    with pytest.raises(UnsupportedImageError):
        workers.decode(b"plain text", 10**6, None, 100, threading.Event())


def test_a_decode_past_the_deadline_is_killed(workers: DecodeWorkers) -> None:
    killed = workers.killed
    with pytest.raises(ImageTooComplexError, match="DECODE_TIMEOUT_S"):
        workers.decode(_slow(), 10**8, None, 10**6, threading.Event())
    assert workers.killed == killed + 1
    assert workers.decode(_png(), 10**6, None, 100, threading.Event()).rgb.shape == (30, 40, 3)


def test_a_cancelled_decode_is_killed_at_once(workers: DecodeWorkers) -> None:
    workers.timeout_s = 60.0
    try:
        cancelled = threading.Event()
        killed = workers.killed
        threading.Timer(0.3, cancelled.set).start()
        with pytest.raises(UnreadableImageError, match="cancelled"):
            workers.decode(_slow(), 10**8, None, 10**6, cancelled)
        assert workers.killed == killed + 1
    finally:
        workers.timeout_s = 2.0


def test_a_worker_that_dies_costs_that_image_a_400_and_is_replaced(workers: DecodeWorkers) -> None:
    victim = workers.pids()[0]
    threading.Timer(0.3, os.kill, (victim, signal.SIGKILL)).start()
    workers.timeout_s = 60.0
    try:
        with pytest.raises(UnreadableImageError, match="crashed"):
            workers.decode(_slow(), 10**8, None, 10**6, threading.Event())
    finally:
        workers.timeout_s = 2.0
    assert victim not in workers.pids()
    assert workers.decode(_png(), 10**6, None, 100, threading.Event()).rgb.shape == (30, 40, 3)
