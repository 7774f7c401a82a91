"""Safe image decoding: bytes or files in, upright RGB uint8 arrays out.

Every image the trainer or the service looks at goes through :func:`decode_image` or :func:`read_image`, so both
see the same pixels: the EXIF orientation applied, alpha composited onto white, and grey, palette, CMYK and 16-bit
images converted to 8-bit RGB. The format is judged by content (Pillow's sniffing), never by file name or declared
type. Pixel counts are checked from the header, before any pixel is decoded, which stops decompression bombs.

Memory: no intermediate wider than the decoded pixels (16-bit images are shifted to 8 bits in place, never through
int64). :func:`decode_reduced` decodes a copy reduced by a whole-number factor when a consumer needs no more than a
given longest side (JPEG by ``draft``, decoding at 1/2, 1/4 or 1/8 directly; other formats by ``Image.reduce``
right after decoding, before the RGB conversion), so a 7000x7000 16-bit TIFF costs its 98 MB of 16-bit pixels
briefly instead of those plus 147 MB of full-size RGB.

Untrusted bytes: this module is the decoder boundary. Only the allowed formats' plugins ever parse the content
(other formats are named from their magic bytes alone), and whatever those plugins raise becomes one of three
``core`` errors: unsupported (415), corrupt (400) or too large (413). A JPEG with more than ``max_scans`` scans is
refused before decoding (:class:`ImageTooComplexError`): each scan makes libjpeg pass over every coefficient of the
image, so a 7000x7000 file of 8,000 empty scans costs about a minute of CPU while any camera writes at most a dozen.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core.errors import (
    ImageTooComplexError,
    ImageTooLargeError,
    UnreadableImageError,
    UnsupportedImageError,
)

ALLOWED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF")
"""Pillow format names accepted; anything else raises :class:`UnsupportedImageError`."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Default pixel limit (width x height): above any phone photo (48-50 MP), far below what exhausts memory."""

DEFAULT_MAX_JPEG_SCANS = 100
"""Most JPEG scans (SOS markers) accepted: libjpeg's progressive mode writes 6 (grey) or 10 (colour), mozjpeg's
optimised scripts a few more; libjpeg-turbo's tools offer ``-maxscans`` for the same defence."""

_SOS = b"\xff\xda"

# Leading bytes of the allowed formats: content that starts like one of them but does not open is corrupt (400),
# content that starts like none of them is not an image type we take (415).
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"II*\x00", b"MM\x00*")

_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_REDUCIBLE_MODES = frozenset({"L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "F"})
_STRIP_BYTES = 4 * 1024 * 1024

# Pillow warns on opening any image over its own limit (~89 MP) even though this module refuses it a moment later
# with a clear error (max_pixels); the warning would only be noise on the console of a service or a job.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode an uploaded or stored image.

    Args:
        data: the encoded bytes of a JPEG, PNG, WebP, BMP or TIFF image (first frame of multi-frame files).
        max_pixels: refuse images whose width x height exceeds this, judged from the header alone.

    Returns:
        The upright image as a C-contiguous ``uint8`` array of shape ``(height, width, 3)``, RGB, 0..255.

    Raises:
        UnreadableImageError: empty, truncated or corrupt data.
        ImageTooLargeError: more than ``max_pixels`` pixels.
        UnsupportedImageError: the content is not one of the allowed formats.
    """
    return decode_reduced(data, max_pixels).rgb


class Decoded(NamedTuple):
    """An image decoded by :func:`decode_reduced`."""

    rgb: np.ndarray
    """Upright RGB uint8, ``(height, width, 3)``, possibly reduced."""
    factor: int
    """Full-size pixels per ``rgb`` pixel along each side (1: not reduced)."""
    full_size: tuple[int, int]
    """``(width, height)`` of the full-size upright image."""


def decode_reduced(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_side: int | None = None,
    max_scans: int = DEFAULT_MAX_JPEG_SCANS,
) -> Decoded:
    """Decode like :func:`decode_image`, reduced by the largest whole-number factor that keeps ``min_side``.

    Args:
        data: the encoded image.
        max_pixels: refuse images whose width x height (at full size) exceeds this.
        min_side: the longest side the caller needs at least; ``None`` decodes at full size.
        max_scans: refuse a JPEG with more scans than this (:class:`ImageTooComplexError`), before decoding.

    Returns:
        The upright RGB uint8 image ``(height, width, 3)``, the factor from its pixels to the full-size image's
        (1 when not reduced: full-size coordinate = factor x reduced coordinate) and the full upright size.
    """
    if not data:
        raise UnreadableImageError("the image is empty (0 bytes)")
    _check_scans(data, max_scans)
    return _decode(io.BytesIO(data), data[:16], max_pixels, min_side)


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` from the header alone (no pixel decoded); the same errors as :func:`decode_image` for
    content that is empty, corrupt or not an allowed format."""
    if not data:
        raise UnreadableImageError("the image is empty (0 bytes)")
    with _open(io.BytesIO(data), data[:16]) as image:
        return image.size


def _check_scans(data: bytes, max_scans: int) -> None:
    """Refuse a JPEG with more than ``max_scans`` SOS markers: counted over the raw bytes, where ``FF DA`` cannot
    occur by chance (entropy-coded data stuffs every ``FF`` with ``00``), so the count is never too low."""
    if data.startswith(_SIGNATURES[0]):
        scans = data.count(_SOS)
        if scans > max_scans:
            raise ImageTooComplexError(
                f"the JPEG has {scans} scans; at most {max_scans} are decoded (a camera writes at most a dozen)"
            )


def read_image(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file; same output and errors as :func:`decode_image`, plus a missing file is unreadable."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise UnreadableImageError(f"cannot read {path}: {err.strerror or err}") from err
    return decode_image(data, max_pixels)


def _decode(stream: io.BytesIO, head: bytes, max_pixels: int, min_side: int | None) -> Decoded:
    image = _open(stream, head)
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"the image is {width}x{height} = {width * height / 1e6:.1f} megapixels; "
            f"the limit is {max_pixels / 1e6:.1f} megapixels"
        )
    factor = max(1, max(width, height) // min_side) if min_side else 1
    try:
        if factor > 1 and image.format == "JPEG":
            # draft() picks the smallest of 1/1, 1/2, 1/4, 1/8 scales that is at least the requested size.
            image.draft(image.mode, (math.ceil(width / factor), math.ceil(height / factor)))
        image.load()
        if image.mode in _SIXTEEN_BIT_MODES:
            image = _eight_bit_grey(image)
        remaining = factor // (width // image.size[0])
        if remaining > 1 and image.mode in _REDUCIBLE_MODES:
            image = image.reduce(remaining)
        factor = round(width / image.size[0])
        upright = ImageOps.exif_transpose(image)
        rgb = _to_rgb(upright)
    except (Image.DecompressionBombError, MemoryError) as err:
        raise ImageTooLargeError(f"the image is too large to decode safely: {err}") from err
    except Exception as err:
        # The boundary: any exception a plugin raises on these bytes (struct.error, KeyError, ...) is their fault.
        raise UnreadableImageError(f"the {image.format} image is truncated or corrupt: {_one_line(err)}") from err
    swapped = rgb.shape[0] != image.size[1]
    return Decoded(rgb, factor, (height, width) if swapped else (width, height))


def _open(stream: io.BytesIO, head: bytes) -> Image.Image:
    """Open lazily (header only) with the allowed decoders; classify a failure as corrupt or unsupported."""
    try:
        return Image.open(stream, formats=ALLOWED_FORMATS)
    except (Image.DecompressionBombError, MemoryError) as err:
        raise ImageTooLargeError(f"the image is too large to decode safely: {err}") from err
    except UnidentifiedImageError:
        pass
    except Exception as err:
        raise UnreadableImageError(f"the image header is corrupt: {_one_line(err)}") from err
    other = _other_format(head)
    if other is not None:
        raise UnsupportedImageError(f"{other} images are not supported; send a JPEG, PNG, WebP, BMP or TIFF image")
    if head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP"):
        raise UnreadableImageError("the image is truncated or corrupt: its header cannot be parsed")
    raise UnsupportedImageError("the content is not an image; send a JPEG, PNG, WebP, BMP or TIFF image")


def _other_format(head: bytes) -> str | None:
    """Name of the format whose magic bytes ``head`` (the first 16) carries, among Pillow's other plugins.

    Only each plugin's ``accept`` test of the prefix runs, never its parser: fuzzed DDS, PSD or SPIDER headers
    make those raise ``RuntimeError`` or ``AttributeError``, and a GIF header can declare 179 MP.
    """
    Image.init()
    for name in Image.ID:
        accept = Image.OPEN[name][1]
        try:
            if name not in ALLOWED_FORMATS and accept is not None and accept(head):
                return name
        except Exception:
            continue  # a plugin's prefix test failing only means "not this format"
    return None


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__


def _eight_bit_grey(image: Image.Image) -> Image.Image:
    """A 16-bit (or 32-bit ``I``) grey image as 8-bit ``L``, scaled by 1/256 and clipped to 0..65535 first.

    Pillow's own conversion clips at 255, which turns most 16-bit photos white. Strips of a few megabytes go through
    numpy, so the only full-size buffers are the decoded image and the 8-bit result: never an 8-byte copy.
    """
    width, height = image.size
    grey = np.empty((height, width), dtype=np.uint8)
    rows = max(1, _STRIP_BYTES // (4 * width))
    for top in range(0, height, rows):
        strip = np.asarray(image.crop((0, top, width, min(top + rows, height))))
        if strip.dtype.kind == "i":
            strip = np.clip(strip, 0, 65535)
        grey[top : top + rows] = strip >> 8
    return Image.fromarray(grey, mode="L")


def _to_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 RGB array (H, W, 3); alpha composited onto white, 16-bit scaled (not clipped)."""
    if image.mode in _SIXTEEN_BIT_MODES:
        image = _eight_bit_grey(image)
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(white, rgba)
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
