"""core.image: content sniffing, EXIF orientation, mode conversion, pixel limits, corrupt input."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from core.errors import ImageTooComplexError, ImageTooLargeError, UnreadableImageError, UnsupportedImageError
from core.image import decode_image, decode_reduced, image_size, read_image
from tests.hostile import MUTANTS, mutated, scan_bomb, tga_header

REPO = Path(__file__).resolve().parents[2]


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def grey_png_bomb(width: int, height: int) -> bytes:
    """A valid 8-bit grey PNG of zeros: a few hundred kB on disk, ``width * height`` bytes once decoded."""
    packer = zlib.compressobj(9)
    row = bytes(width + 1)  # filter byte + pixels
    body = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", body) + png_chunk(b"IEND", b"")


def test_png_fixture_decodes_to_rgb_uint8(fixtures_dir: Path) -> None:
    rgb = read_image(fixtures_dir / "astronaut.png")
    assert rgb.shape == (512, 512, 3)
    assert rgb.dtype == np.uint8
    assert rgb.flags["C_CONTIGUOUS"]
    assert rgb.std() > 20  # a real photo, not a blank


def test_format_is_judged_by_content_not_name(tmp_path: Path, fixtures_dir: Path) -> None:
    misnamed = tmp_path / "photo.gif"
    misnamed.write_bytes((fixtures_dir / "astronaut.png").read_bytes())
    assert read_image(misnamed).shape == (512, 512, 3)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(orientation: int) -> None:
    upright = Image.fromarray(np.arange(6 * 10 * 3, dtype=np.uint8).reshape(6, 10, 3))
    undo = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }
    stored = upright.transpose(undo[orientation]) if orientation in undo else upright
    exif = Image.Exif()
    exif[0x0112] = orientation
    decoded = decode_image(encode(stored, "PNG", exif=exif))
    np.testing.assert_array_equal(decoded, np.asarray(upright))


@pytest.mark.parametrize(
    ("image", "fmt", "expected"),
    [
        (Image.new("1", (4, 4), 1), "PNG", (255, 255, 255)),
        (Image.new("L", (4, 4), 100), "PNG", (100, 100, 100)),
        (Image.new("LA", (4, 4), (100, 0)), "PNG", (255, 255, 255)),
        (Image.new("LA", (4, 4), (100, 255)), "PNG", (100, 100, 100)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 0)), "PNG", (255, 255, 255)),
        (Image.new("RGBA", (4, 4), (10, 20, 30, 255)), "WEBP", (10, 20, 30)),
        (Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "TIFF", (255, 0, 0)),
        (Image.new("I;16", (4, 4), 51200), "PNG", (200, 200, 200)),
        (Image.new("I;16", (4, 4), 65535), "TIFF", (255, 255, 255)),
        (Image.new("RGB", (4, 4), (1, 2, 3)), "BMP", (1, 2, 3)),
    ],
    ids=["1", "L", "LA-clear", "LA-opaque", "RGBA-clear", "RGBA-webp", "CMYK", "I16-png", "I16-tiff", "BMP"],
)
def test_every_mode_converts_to_rgb(image: Image.Image, fmt: str, expected: tuple[int, int, int]) -> None:
    options = {"lossless": True} if fmt == "WEBP" else {}
    rgb = decode_image(encode(image, fmt, **options))
    assert rgb.shape == (4, 4, 3)
    assert rgb.dtype == np.uint8
    assert tuple(int(v) for v in rgb[0, 0]) == expected


def test_palette_with_transparency_composites_on_white() -> None:
    image = Image.new("P", (4, 2), 0)
    image.putpalette([10, 20, 30, 200, 100, 50] + [0] * 762)
    image.putpixel((0, 0), 1)
    rgb = decode_image(encode(image, "PNG", transparency=0))
    assert tuple(rgb[0, 0]) == (200, 100, 50)
    assert tuple(rgb[1, 1]) == (255, 255, 255)


def test_cmyk_jpeg_converts() -> None:
    rgb = decode_image(encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95))
    assert np.abs(rgb.astype(int) - (255, 0, 0)).max() < 10


@settings(max_examples=25, deadline=None)
@given(
    pixels=arrays(np.uint8, st.tuples(st.integers(1, 12), st.integers(1, 12), st.just(3))),
    fmt=st.sampled_from(["PNG", "BMP", "TIFF", "WEBP"]),
)
def test_lossless_round_trip(pixels: np.ndarray, fmt: str) -> None:
    options = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    np.testing.assert_array_equal(decode_image(encode(Image.fromarray(pixels), fmt, **options)), pixels)


def test_decompression_bomb_is_refused_before_decoding() -> None:
    bomb = grey_png_bomb(10_000, 8_000)  # 80 megapixels in about 80 kB
    assert len(bomb) < 1_000_000
    with pytest.raises(ImageTooLargeError, match=r"80\.0 megapixels"):
        decode_image(bomb)


def test_refusal_over_pillows_own_limit_is_one_error_not_a_warning_too(tmp_path: Path) -> None:
    # In a fresh process: pytest resets warning filters around collection, so only there the module's own holds.
    (tmp_path / "bomb.png").write_bytes(grey_png_bomb(12_000, 8_000))  # 96 MP, over Pillow's ~89 MP warning
    code = (
        "from core.image import read_image\n"
        "from core.errors import ImageTooLargeError\n"
        "try:\n"
        f"    read_image({str(tmp_path / 'bomb.png')!r})\n"
        "except ImageTooLargeError as err:\n"
        "    print('refused:', err)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert "refused: the image is 12000x8000 = 96.0 megapixels" in done.stdout
    assert "Warning" not in done.stderr


def test_pixel_limit_is_configurable(fixtures_dir: Path) -> None:
    with pytest.raises(ImageTooLargeError, match=r"limit is 0\.1 megapixels"):
        read_image(fixtures_dir / "astronaut.png", max_pixels=100_000)


def test_header_claiming_billions_of_pixels_is_too_large() -> None:
    header = png_chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
    with pytest.raises(ImageTooLargeError):
        decode_image(b"\x89PNG\r\n\x1a\n" + header + png_chunk(b"IEND", b""))


def test_truncated_jpeg_is_unreadable(fixtures_dir: Path) -> None:
    data = (fixtures_dir / "2008_001009.jpg").read_bytes()
    with pytest.raises(UnreadableImageError, match="truncated or corrupt"):
        decode_image(data[: len(data) // 2])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", UnreadableImageError),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, UnreadableImageError),
        (b"\xff\xd8\xff" + b"\x00" * 40, UnreadableImageError),
        (b"Hello, this is plain text and not an image at all.", UnsupportedImageError),
        (encode(Image.new("RGB", (4, 4)), "GIF"), UnsupportedImageError),
    ],
    ids=["empty", "png-garbage", "jpeg-garbage", "text", "gif"],
)
def test_bad_content_raises_the_right_error(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_image(data)


def test_unsupported_type_is_named_in_the_message() -> None:
    with pytest.raises(UnsupportedImageError, match="GIF images are not supported"):
        decode_image(encode(Image.new("RGB", (4, 4)), "GIF"))


def test_missing_file_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(UnreadableImageError, match="cannot read"):
        read_image(tmp_path / "nope.jpg")


def test_sixteen_bit_images_decode_without_an_eight_byte_copy() -> None:
    import tracemalloc

    from PIL import Image

    side = 1500
    wide = np.random.default_rng(0).integers(0, 65536, (side, side), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="TIFF")
    data = buffer.getvalue()
    tracemalloc.start()
    try:
        rgb = decode_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert np.array_equal(rgb[:, :, 1], (wide >> 8).astype(np.uint8))
    # Needed: the file's 2 bytes a pixel as read, the 8-bit grey and RGB results (4) and a few-MB strip; an int64
    # copy next to the RGB result alone would be 11.
    assert peak < 9 * side * side, f"Python-side allocations peaked at {peak / side / side:.1f} bytes a pixel"


def test_a_large_jpeg_is_decoded_reduced_by_draft_and_says_by_how_much() -> None:
    from PIL import Image

    from core.image import decode_reduced

    pixels = np.random.default_rng(0).integers(0, 256, (3000, 4000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    decoded = decode_reduced(buffer.getvalue(), min_side=1536)
    assert decoded.rgb.shape == (1500, 2000, 3)
    assert decoded.factor == 2
    assert decoded.full_size == (4000, 3000)
    full = decode_reduced(buffer.getvalue())
    assert full.rgb.shape == (3000, 4000, 3)
    assert full.factor == 1


def test_a_large_png_is_reduced_after_decoding_and_keeps_min_side() -> None:
    from PIL import Image

    from core.image import decode_reduced

    buffer = io.BytesIO()
    Image.new("I;16", (7000, 700), 40000).save(buffer, format="PNG")
    decoded = decode_reduced(buffer.getvalue(), min_side=1536)
    assert decoded.factor == 4
    assert decoded.rgb.shape == (175, 1750, 3)
    assert decoded.rgb.max() == 40000 >> 8


def test_a_jpeg_with_more_scans_than_any_camera_writes_is_refused_before_decoding() -> None:
    bomb = scan_bomb(side=64, scans=150)
    with pytest.raises(ImageTooComplexError, match="at most 100"):
        decode_image(bomb)
    assert decode_reduced(bomb, max_scans=200).rgb.shape == (64, 64, 3)


def test_an_ordinary_progressive_jpeg_is_under_the_scan_cap() -> None:
    photo = Image.fromarray(np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    assert decode_image(encode(photo, "JPEG", progressive=True, optimize=True)).shape == (48, 64, 3)


@pytest.mark.parametrize(("fmt", "seed"), MUTANTS, ids=[fmt for fmt, _ in MUTANTS])
def test_a_mutant_of_another_format_is_unsupported_and_its_plugin_never_parses_it(fmt: str, seed: int) -> None:
    with pytest.raises(UnsupportedImageError):
        decode_image(mutated(fmt, seed))


def test_a_tga_header_declaring_four_gigapixels_is_unsupported() -> None:
    with pytest.raises(UnsupportedImageError):
        decode_image(tga_header())


def test_whatever_a_plugin_raises_on_bad_bytes_becomes_a_core_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Image.Image) -> None:
        raise AttributeError("'NoneType' object has no attribute 'tile'")

    png = encode(Image.new("RGB", (4, 4)), "PNG")
    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", broken)
    with pytest.raises(UnreadableImageError, match="NoneType"):
        decode_image(png)


def test_image_size_reads_the_header_only() -> None:
    assert image_size(grey_png_bomb(10_000, 8_000)) == (10_000, 8_000)
    with pytest.raises(UnsupportedImageError):
        image_size(b"plain text, not an image")
