"""Hostile uploads (issue 20), built on demand: a JPEG scan bomb, headers declaring huge images in formats the
service does not take, and fuzzed files of formats whose Pillow plugins raise odd exceptions. Used by the tests and
by ``bench/bench_hardening.py``."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image

# An empty AC refinement scan of component 1 (Ss=1, Se=63, Ah=1, Al=0): a few bytes that still make libjpeg walk
# every block of the image once more.
_EMPTY_SCAN = b"\xff\xda\x00\x08\x01\x01\x00\x01\x3f\x10"


def scan_bomb(side: int = 7000, scans: int = 8000) -> bytes:
    """A progressive grey JPEG of ``side`` x ``side`` with ``scans`` empty refinement scans appended."""
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((side, side), np.uint8)).save(buffer, format="JPEG", progressive=True, quality=50)
    return buffer.getvalue()[:-2] + _EMPTY_SCAN * scans + b"\xff\xd9"


def gif_header(width: int = 65535, height: int = 65535) -> bytes:
    """A GIF screen descriptor declaring ``width`` x ``height`` (4.3 GP by default) and nothing else: 14 bytes."""
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + b";"


def tga_header(width: int = 65535, height: int = 65535) -> bytes:
    """A true-colour TGA header declaring ``width`` x ``height`` and a few pixels: TGA has no magic bytes."""
    return struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, width, height, 24, 0) + bytes(100)


def mutated(fmt: str, seed: int) -> bytes:
    """A 16x16 image saved by Pillow as ``fmt`` with 1-5 of its first 64 bytes overwritten at random (``seed``)."""
    rng = np.random.default_rng(seed)
    pixels = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    (pixels.convert("L") if fmt == "SPIDER" else pixels).save(buffer, format=fmt)
    data = bytearray(buffer.getvalue())
    for _ in range(rng.integers(1, 6)):
        where = int(rng.integers(0, min(len(data), 64)))
        data[where] = int(rng.integers(0, 256))
    return bytes(data)


MUTANTS = (("DDS", 5), ("QOI", 1), ("GIF", 32), ("SPIDER", 136), ("JPEG2000", 91))
"""(format, seed) pairs whose mutants made Pillow 13's plugins raise ``DecompressionBombError`` through the old
decoder (a 500 with a traceback)."""
