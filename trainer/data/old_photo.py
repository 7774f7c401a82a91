"""What a print scanned decades later does to a face: colour casts, fading, grain, halftone, dust, vignetting.

Built from how old photographs are made and reproduced, not from any collection of them:
- **sepia and faded colour casts**: toned prints (silver sulphide) are brown; dye prints fade unevenly, one layer
  first, leaving a yellow, magenta or cyan cast (:func:`sepia`);
- **low contrast**: faded prints lose density in the shadows, so blacks lift and the range narrows (:func:`fade`);
- **film grain**: silver grains clump, so the noise is monochrome and a little coarser than a pixel (:func:`grain`);
- **halftone and scanner blur**: a print from a book or newspaper is a screen of dots, and the scanner's optics and
  a descreening filter blur it (:func:`halftone`);
- **dust and scratches**: specks and thin lines, bright on a scan of a print (:func:`dust`);
- **vignetting**: old lenses darken the corners (:func:`vignette`);
- **small faces** are the existing ``downscale`` augmentation.

Every function takes and returns ``(H, W, 3)`` float32 RGB in 0..255 and draws its random strengths from ``rng``: a
:class:`Draw` for training (stateful, new each call) or a fixed-seed one for the deterministic ``old_photo`` copy
that ``age-robustness`` scores. Pixel sizes are given for a 150-px chip and scaled with the chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import tensorflow as tf

__all__ = ["Draw", "dust", "fade", "gaussian_blur", "grain", "halftone", "old_photo", "sepia", "vignette"]

_REFERENCE_SIZE = 150.0
# Sepia toning: the print's luma times a brown tint (per RGB channel) that keeps its brightness about the same.
# Plain tuples, not tensors: a tensor made at import would start TensorFlow's context before age-train builds its
# distribution strategy, which multi-worker training refuses ("Collective ops must be configured at start-up").
_LUMA = (0.299, 0.587, 0.114)
_SEPIA_TINT = (1.10, 0.95, 0.72)


@dataclass(frozen=True)
class Draw:
    """Random numbers for the effects: stateful (training) when ``seed`` is ``None``, else repeatable."""

    seed: int | None = None

    def _seed(self, salt: int) -> tf.Tensor:
        return tf.constant([self.seed or 0, salt], dtype=tf.int32)

    def uniform(self, shape: tuple[int, ...] | tf.Tensor, low: float, high: float, salt: int = 0) -> tf.Tensor:
        """Uniform float32 in ``[low, high)``."""
        if self.seed is None:
            return tf.random.uniform(shape, low, high)
        return tf.random.stateless_uniform(shape, self._seed(salt), low, high)

    def normal(self, shape: tuple[int, ...] | tf.Tensor, salt: int = 0) -> tf.Tensor:
        """Standard normal float32."""
        if self.seed is None:
            return tf.random.normal(shape)
        return tf.random.stateless_normal(shape, self._seed(salt))


def _scale(image: tf.Tensor) -> float:
    return float(image.shape[0]) / _REFERENCE_SIZE


def sepia(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """Brown toning of strength 0.3-1, then a faded dye layer: each channel's gain moves by up to ±12%."""
    strength = rng.uniform((), 0.3, 1.0, salt=1)
    toned = tf.reduce_sum(image * tf.constant(_LUMA), axis=-1, keepdims=True) * tf.constant(_SEPIA_TINT)
    mixed = (1.0 - strength) * image + strength * toned
    gains = 1.0 + rng.uniform((3,), -0.12, 0.12, salt=2)
    return tf.clip_by_value(mixed * gains, 0.0, 255.0)


def fade(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """Contrast cut to 45-85% around the mean and the black level lifted by 10-60 (of 255)."""
    contrast = rng.uniform((), 0.45, 0.85, salt=3)
    lift = rng.uniform((), 10.0, 60.0, salt=4)
    mean = tf.reduce_mean(image)
    flat = mean + (image - mean) * contrast
    return tf.clip_by_value(lift + flat * (255.0 - lift) / 255.0, 0.0, 255.0)


def _box_blur3(plane: tf.Tensor) -> tf.Tensor:
    return tf.nn.avg_pool2d(plane[None], 3, 1, "SAME")[0]


def grain(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """Monochrome grain of standard deviation 3-10 (of 255), clumped over about 2 px at 150 px."""
    sigma = rng.uniform((), 3.0, 10.0, salt=5)
    noise = rng.normal((*image.shape[:2], 1), salt=6)
    if _scale(image) >= 0.75:
        # A 3x3 mean divides the noise's deviation by 3; multiplying back keeps sigma the grain's strength.
        noise = _box_blur3(noise) * 3.0
    return tf.clip_by_value(image + sigma * noise, 0.0, 255.0)


def gaussian_blur(image: tf.Tensor, sigma: tf.Tensor) -> tf.Tensor:
    """Separable Gaussian blur of ``sigma`` px (radius 4, reflected edges)."""
    radius = 4
    x = tf.range(-radius, radius + 1, dtype=tf.float32)
    weights = tf.exp(-0.5 * tf.square(x / tf.maximum(sigma, 1e-3)))
    weights = weights / tf.reduce_sum(weights)
    rows = tf.tile(tf.reshape(weights, (-1, 1, 1, 1)), (1, 1, 3, 1))
    cols = tf.tile(tf.reshape(weights, (1, -1, 1, 1)), (1, 1, 3, 1))
    padded = tf.pad(image[None], [[0, 0], [radius, radius], [radius, radius], [0, 0]], mode="REFLECT")
    out = tf.nn.depthwise_conv2d(padded, rows, (1, 1, 1, 1), "VALID")
    return tf.nn.depthwise_conv2d(out, cols, (1, 1, 1, 1), "VALID")[0]


def halftone(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """A 45-degree dot screen of period 2.5-4.5 px and depth 15-40%, then scanner blur of sigma 0.6-1.5 px."""
    scale = _scale(image)
    period = rng.uniform((), 2.5, 4.5, salt=7) * scale
    depth = rng.uniform((), 0.15, 0.4, salt=8)
    sigma = rng.uniform((), 0.6, 1.5, salt=9) * scale
    height, width = image.shape[0], image.shape[1]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    u, v = (xs + ys) / math.sqrt(2.0), (xs - ys) / math.sqrt(2.0)
    screen = tf.cos(2.0 * math.pi * u / period) * tf.cos(2.0 * math.pi * v / period)
    dotted = image * (1.0 + depth * screen[..., None])
    return tf.clip_by_value(gaussian_blur(dotted, sigma), 0.0, 255.0)


def dust(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """Specks (0.05-0.3% of pixels, 1-3 px) and up to three thin near-vertical scratches, bright as on a scan."""
    height, width = image.shape[0], image.shape[1]
    density = rng.uniform((), 0.0005, 0.003, salt=10)
    specks = tf.cast(rng.uniform((height, width, 1), 0.0, 1.0, salt=11) < density, tf.float32)
    specks = tf.nn.max_pool2d(specks[None], 2 if _scale(image) < 0.75 else 3, 1, "SAME")[0]
    ys, xs = tf.meshgrid(tf.range(height, dtype=tf.float32), tf.range(width, dtype=tf.float32), indexing="ij")
    starts = rng.uniform((3, 1, 1), 0.0, float(width), salt=12)
    slopes = rng.uniform((3, 1, 1), -0.15, 0.15, salt=13)
    present = tf.cast(rng.uniform((3, 1, 1), 0.0, 1.0, salt=14) < 0.5, tf.float32)
    lines = tf.cast(tf.abs(xs[None] - (starts + slopes * ys[None])) < 0.6, tf.float32) * present
    mask = tf.maximum(specks, tf.reduce_max(lines, axis=0)[..., None])
    alpha = rng.uniform((), 0.6, 0.9, salt=15)
    return image * (1.0 - alpha * mask) + 235.0 * alpha * mask


def vignette(image: tf.Tensor, rng: Draw) -> tf.Tensor:
    """Corners darkened by 20-60%, falling off with the square of the distance from the centre."""
    strength = rng.uniform((), 0.2, 0.6, salt=16)
    height, width = image.shape[0], image.shape[1]
    ys, xs = tf.meshgrid(tf.linspace(-1.0, 1.0, height), tf.linspace(-1.0, 1.0, width), indexing="ij")
    falloff = 1.0 - strength * (tf.square(xs) + tf.square(ys)) / 2.0
    return image * falloff[..., None]


def old_photo(image: tf.Tensor, seed: int = 0) -> tf.Tensor:
    """The fixed ``old_photo`` copy: every effect above at a repeatable strength, then a face shrunk to 64 px."""
    rng = Draw(seed=seed)
    for effect in (sepia, fade, vignette, halftone, grain, dust):
        image = effect(image, rng)
    size = int(image.shape[0])
    side = max(8, round(64 * _scale(image)))
    small = tf.image.resize(image, (side, side), method="area")
    return tf.clip_by_value(tf.image.resize(small, (size, size), method="bilinear"), 0.0, 255.0)
