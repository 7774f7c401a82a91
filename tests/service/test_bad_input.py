"""A corpus of bad uploads: each gets the contract's status and a one-line ``detail``, never a 5xx.

Every case is built when its test runs (no work at import time) and sent to the session app, which aligns with the
real dlib ``FaceAligner``, takes uploads of at most 1 MB and checks pixel counts against the default 50 MP. After
each case ``GET /health`` must still answer 200. Cases that are odd but valid images (CMYK, 16-bit, a path-like
file name, a misleading declared type) must give a face: the service judges content, never names or headers.
"""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from tests.hostile import MUTANTS, gif_header, mutated, scan_bomb, tga_header
from tests.service.conftest import photo_path

BOUNDARY = "corpus-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@cache
def _astronaut() -> Image.Image:
    """A real photo with one clear face (512x512 RGB)."""
    return Image.open(photo_path("astronaut.png")).convert("RGB")


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png_bomb(side: int = 8000) -> bytes:
    """A complete, valid greyscale PNG of side x side black pixels (64 MP), about 64 KB compressed."""
    compressor = zlib.compressobj(9)
    row = b"\x00" * (side + 1)
    body = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body) + _png_chunk(b"IEND", b"")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and header claiming width x height RGB, and nothing else: Pillow needs an IDAT to open it."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header)


def _bmp_header_only(width: int, height: int) -> bytes:
    file_header = b"BM" + struct.pack("<IHHI", 0, 0, 0, 54)
    return file_header + struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 0, 0, 0, 0)


def _animated_gif() -> bytes:
    frames = [Image.new("P", (20, 20), colour) for colour in range(3)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buffer.getvalue()


def _jpeg_with_zero_height() -> bytes:
    data = bytearray(_encode(_astronaut(), "JPEG"))
    frame = data.find(b"\xff\xc0")
    data[frame + 5 : frame + 7] = b"\x00\x00"
    return bytes(data)


def _jpeg_with_bad_orientation() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 9  # orientations run 1..8; 9 must be ignored, not crash the rotation
    return _encode(_astronaut(), "JPEG", exif=exif)


def _sixteen_bit_png() -> bytes:
    grey = np.asarray(_astronaut().convert("L")).astype(np.uint16) * 257
    return _encode(Image.fromarray(grey), "PNG")


def _random_bytes() -> bytes:
    data = np.random.default_rng(8).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    assert not data.startswith((b"\xff\xd8", b"\x89PNG", b"BM", b"II", b"MM", b"RIFF", b"GIF"))
    return data


SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><circle r="30"/></svg>'


Request = Callable[[], dict[str, Any]]
"""Builds the keyword arguments of ``TestClient.post`` for one case."""


def upload(data: Callable[[], bytes], name: str = "photo.jpg", declared: str = "application/octet-stream") -> Request:
    """A request whose multipart field ``file`` holds ``data()``."""
    return lambda: {"files": {"file": (name, data(), declared)}}


def raw(body: Callable[[], bytes], headers: dict[str, str] = MULTIPART) -> Request:
    """A request with exactly this body and these headers."""
    return lambda: {"content": body(), "headers": headers}


def _part(name: str, data: bytes, filename: str | bytes = b"photo.jpg") -> bytes:
    filename = filename.encode() if isinstance(filename, str) else filename
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; filename="'.encode()
    return head + filename + b'"\r\nContent-Type: application/octet-stream\r\n\r\n' + data + b"\r\n"


def _closed(*parts: bytes) -> bytes:
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass(frozen=True)
class BadUpload:
    """One corpus entry: how to send it, the expected status and words the ``detail`` must contain."""

    id: str
    request: Request
    status: int
    words: str = ""


CORPUS = [
    BadUpload("empty-file", upload(lambda: b""), 400, "empty"),
    BadUpload("text", upload(lambda: b"name,age\nbob,42\n", "ages.csv"), 415, "not an image"),
    BadUpload("truncated-jpeg", upload(lambda: _encode(_astronaut(), "JPEG")[:4000]), 400, "truncated"),
    BadUpload("jpeg-header-only", upload(lambda: _encode(_astronaut(), "JPEG")[:20]), 400, "corrupt"),
    BadUpload("truncated-png", upload(lambda: _encode(_astronaut(), "PNG")[:5000]), 400, "truncated"),
    BadUpload("truncated-webp", upload(lambda: _encode(_astronaut(), "WEBP")[:300]), 400, "corrupt"),
    BadUpload("jpeg-zero-height", upload(_jpeg_with_zero_height), 400, "corrupt"),
    BadUpload("random-bytes", upload(_random_bytes), 415, "not an image"),
    BadUpload("decompression-bomb-png", upload(_png_bomb), 413, "megapixels"),
    BadUpload("png-header-only-100000x100000", upload(lambda: _png_header_only(100_000, 100_000)), 400, "corrupt"),
    BadUpload("bmp-header-100000x100000", upload(lambda: _bmp_header_only(100_000, 100_000)), 413, "too large"),
    BadUpload("one-pixel", upload(lambda: _encode(Image.new("RGB", (1, 1)), "PNG")), 422, "no face"),
    BadUpload("blank", upload(lambda: _encode(Image.new("RGB", (640, 480), "white"), "JPEG")), 422, "no face"),
    BadUpload("transparent", upload(lambda: _encode(Image.new("RGBA", (300, 300)), "PNG")), 422, "no face"),
    BadUpload("10x100000-strip", upload(lambda: _encode(Image.new("L", (10, 100_000)), "PNG")), 422, "no face"),
    BadUpload("cmyk-jpeg", upload(lambda: _encode(_astronaut().convert("CMYK"), "JPEG")), 200),
    BadUpload("16-bit-png", upload(_sixteen_bit_png), 200),
    BadUpload("exif-orientation-9", upload(_jpeg_with_bad_orientation), 200),
    BadUpload("animated-gif", upload(_animated_gif, "a.gif", "image/gif"), 415, "gif"),
    BadUpload("svg", upload(lambda: SVG, "a.svg", "image/svg+xml"), 415, "not an image"),
    BadUpload("ico", upload(lambda: _encode(Image.new("RGB", (32, 32)), "ICO"), "a.ico"), 415, "ico"),
    BadUpload("pdf", upload(lambda: b"%PDF-1.4\n1 0 obj <<>> endobj\n", "a.pdf", "application/pdf"), 415, "not an"),
    BadUpload("image-declared-text", upload(lambda: _encode(_astronaut(), "PNG"), "notes.txt", "text/plain"), 200),
    BadUpload("text-declared-jpeg", upload(lambda: b"hello", "photo.jpg", "image/jpeg"), 415, "not an image"),
    BadUpload("over-size-limit", upload(lambda: b"\xff\xd8\xff" + bytes(1_100_000)), 413, "limit"),
    BadUpload("path-like-name", upload(lambda: _encode(_astronaut(), "JPEG"), "../../etc/passwd"), 200),
    BadUpload(
        "non-utf8-name", raw(lambda: _closed(_part("file", _encode(_astronaut(), "JPEG"), b"\xff\xfe.jpg"))), 200
    ),
    BadUpload("no-file-field", raw(lambda: _closed(_part("image", b"x"))), 422, "no field named 'file'"),
    BadUpload("zero-byte-multipart", raw(lambda: b""), 422, "no field named 'file'"),
    BadUpload("json-body", lambda: {"json": {"file": "photo.jpg"}}, 422, "multipart/form-data"),
    BadUpload(
        "multipart-without-boundary",
        raw(lambda: b"x", {"content-type": "multipart/form-data"}),
        422,
        "multipart/form-data",
    ),
    BadUpload("malformed-multipart", raw(lambda: f"--{BOUNDARY}\r\ngarbage\r\n\r\n".encode()), 422, "malformed"),
    BadUpload(
        "overlong-boundary",
        raw(lambda: b"--" + b"b" * 5000 + b"\r\n", {"content-type": "multipart/form-data; boundary=" + "b" * 5000}),
        422,
        "malformed",
    ),
    BadUpload("unterminated-part", raw(lambda: _part("file", _encode(_astronaut(), "JPEG"))), 422, "closing boundary"),
    BadUpload(
        "two-files-refused",
        raw(lambda: _closed(_part("file", b"hello"), _part("file", _encode(_astronaut(), "JPEG")))),
        422,
        "2 fields named 'file'",
    ),
    # Issue 20: CPU bombs and files whose Pillow plugins raised exceptions the decoder did not catch (500s).
    BadUpload("jpeg-8000-scans", upload(lambda: scan_bomb(side=512, scans=8000)), 422, "scans"),
    BadUpload("gif-header-4-gigapixels", upload(gif_header, "a.gif"), 415, "gif"),
    BadUpload("tga-header-4-gigapixels", upload(tga_header, "a.tga"), 415, "supported"),
    *(BadUpload(f"mutated-{fmt.lower()}", upload(lambda f=fmt, s=seed: mutated(f, s)), 415) for fmt, seed in MUTANTS),
]


@pytest.mark.parametrize("case", CORPUS, ids=[case.id for case in CORPUS])
def test_bad_upload_gets_its_status_and_a_one_line_detail(client: TestClient, case: BadUpload) -> None:
    response = client.post("/predict", **case.request())
    assert response.status_code == case.status, response.text
    body = response.json()
    if case.status == 200:
        assert body["faces"], "a valid photo of a face gives at least one face"
        assert body["result_value"] == body["faces"][0]["result_value"]
    else:
        assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
        detail = body["detail"]
        assert isinstance(detail, str)
        assert "\n" not in detail
        assert case.words.lower() in detail.lower()
    assert client.get("/health").status_code == 200
