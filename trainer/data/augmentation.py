"""Degradations that real photos carry and UTKFace's clean colour chips do not: greyscale, blur, JPEG, small faces,
and the marks of an old print scanned decades later (:mod:`trainer.data.old_photo`).

Used two ways, on ``(H, W, 3)`` float32 RGB chips in 0..255:
- as training augmentation (:class:`Robustness`, each a ``train_config`` key: ``augment_greyscale``,
  ``augment_blur``, ``augment_jpeg`` with ``augment_jpeg_quality``, ``augment_downscale`` with
  ``augment_downscale_min``, ``augment_color_jitter``, and the old-print keys ``augment_sepia``, ``augment_fade``,
  ``augment_vignette``, ``augment_halftone``, ``augment_grain``, ``augment_dust``), each applied to a chip with
  its own probability;
- as fixed copies of a validation or test set that ``age-robustness`` scores (:func:`degrade`), so a model is
  chosen on how it holds up, not only on clean chips.

Sizes scale with the chip: a blur sigma or a downscaled face side is given for a 150-px chip and scaled to others.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import tensorflow as tf

from trainer.data import old_photo

if TYPE_CHECKING:
    from trainer.training.config import TrainConfig

__all__ = ["DEGRADATIONS", "Robustness", "degrade"]

# The fixed robustness copies: name -> what it does to a chip.
DEGRADATIONS = {
    "greyscale": "colour removed (luma copied to R, G and B)",
    "blur": "Gaussian blur, sigma 1.5 px at 150 px",
    "jpeg20": "JPEG re-compressed at quality 20",
    "small40": "face downscaled to 40 px and back up (a small face in a large photo)",
    "old_photo": "a scanned old print: sepia, faded, vignetted, halftone and scanner blur, grain, dust, 64-px face",
}
# The old-print effects (trainer.data.old_photo), applied in this order: Robustness field -> function.
OLD_PRINT = {
    "sepia": old_photo.sepia,
    "fade": old_photo.fade,
    "vignette": old_photo.vignette,
    "halftone": old_photo.halftone,
    "grain": old_photo.grain,
    "dust": old_photo.dust,
}
_REFERENCE_SIZE = 150.0


def _greyscale(image: tf.Tensor) -> tf.Tensor:
    return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _jpeg(image: tf.Tensor, quality: tf.Tensor) -> tf.Tensor:
    pixels = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.cast(tf.image.adjust_jpeg_quality(pixels, quality), tf.float32)


def _downscale(image: tf.Tensor, side: tf.Tensor, img_size: int) -> tf.Tensor:
    small = tf.image.resize(image, (side, side), method="area")
    return tf.image.resize(small, (img_size, img_size), method="bilinear")


@dataclass(frozen=True)
class Robustness:
    """Random degradations for training; every probability 0 (the default) leaves chips as they are.

    ``greyscale``, ``blur``, ``jpeg``, ``downscale``: probabilities in [0, 1]. Blur sigma is uniform in
    0.5-2.5 px, JPEG quality in ``jpeg_quality``-60, the downscaled side in ``downscale_min`` to 3/4 of the chip.
    ``color_jitter`` in [0, 1] scales a random saturation (1 ± s) and hue shift (± 0.08 s), applied to every chip.
    """

    greyscale: float = 0.0
    blur: float = 0.0
    jpeg: float = 0.0
    jpeg_quality: int = 20
    downscale: float = 0.0
    downscale_min: int = 32
    color_jitter: float = 0.0
    sepia: float = 0.0
    fade: float = 0.0
    vignette: float = 0.0
    halftone: float = 0.0
    grain: float = 0.0
    dust: float = 0.0

    @classmethod
    def from_config(cls, config: TrainConfig) -> Robustness:
        """The ``augment_*`` keys of a training config."""
        return cls(
            greyscale=config.augment_greyscale,
            blur=config.augment_blur,
            jpeg=config.augment_jpeg,
            jpeg_quality=config.augment_jpeg_quality,
            downscale=config.augment_downscale,
            downscale_min=config.augment_downscale_min,
            color_jitter=config.augment_color_jitter,
            sepia=config.augment_sepia,
            fade=config.augment_fade,
            vignette=config.augment_vignette,
            halftone=config.augment_halftone,
            grain=config.augment_grain,
            dust=config.augment_dust,
        )

    def apply(self, image: tf.Tensor, img_size: int) -> tf.Tensor:
        """``(H, W, 3)`` float32 in 0..255 -> the same shape, randomly degraded."""
        scale = img_size / _REFERENCE_SIZE
        if self.color_jitter > 0:
            unit = image / 255.0
            unit = tf.image.random_saturation(unit, 1.0 - self.color_jitter, 1.0 + self.color_jitter)
            unit = tf.image.random_hue(unit, 0.08 * self.color_jitter)
            image = tf.clip_by_value(unit, 0.0, 1.0) * 255.0
        if self.greyscale > 0:
            image = self._maybe(self.greyscale, image, lambda: _greyscale(image))
        if self.downscale > 0:
            top = max(self.downscale_min + 1, round(img_size * 0.75))
            side = tf.random.uniform((), self.downscale_min, top, dtype=tf.int32)
            image = self._maybe(self.downscale, image, lambda: _downscale(image, side, img_size))
        image = self._old_print(image)
        if self.blur > 0:
            sigma = tf.random.uniform((), 0.5, 2.5) * scale
            image = self._maybe(self.blur, image, lambda: old_photo.gaussian_blur(image, sigma))
        if self.jpeg > 0:
            quality = tf.random.uniform((), self.jpeg_quality, max(self.jpeg_quality, 60) + 1, dtype=tf.int32)
            image = self._maybe(self.jpeg, image, lambda: _jpeg(image, quality))
        return image

    def _old_print(self, image: tf.Tensor) -> tf.Tensor:
        draw = old_photo.Draw()
        for name, effect in OLD_PRINT.items():
            probability = getattr(self, name)
            if probability > 0:
                image = self._maybe(probability, image, lambda effect=effect, image=image: effect(image, draw))
        return image

    @staticmethod
    def _maybe(probability: float, image: tf.Tensor, change: object) -> tf.Tensor:
        out = tf.cond(tf.random.uniform(()) < probability, change, lambda: image)  # type: ignore[arg-type]
        return tf.ensure_shape(out, image.shape)


def degrade(image: tf.Tensor, name: str) -> tf.Tensor:
    """One of :data:`DEGRADATIONS` applied deterministically to ``(H, W, 3)`` float32 RGB in 0..255."""
    img_size = int(image.shape[0])
    scale = img_size / _REFERENCE_SIZE
    if name == "greyscale":
        return _greyscale(image)
    if name == "blur":
        return old_photo.gaussian_blur(image, tf.constant(1.5 * scale))
    if name == "jpeg20":
        return _jpeg(image, tf.constant(20))
    if name == "small40":
        return _downscale(image, tf.constant(40), img_size)
    if name == "old_photo":
        return old_photo.old_photo(image)
    raise ValueError(f"unknown degradation {name!r}; valid ones are {', '.join(DEGRADATIONS)}")
