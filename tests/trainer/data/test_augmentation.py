"""Robustness degradations: each changes a real chip the way its name says, keeps its shape and pixel range."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from core.face import FaceAligner
from trainer.data.augmentation import DEGRADATIONS, Robustness, degrade


@pytest.fixture(scope="module")
def chip(fixtures_dir: Path) -> tf.Tensor:
    rgb = np.asarray(Image.open(fixtures_dir / "astronaut.png").convert("RGB"))
    return tf.constant(FaceAligner(chip_size=96, padding=0.25).align(rgb)[0].chip.astype("float32"))


def _sharpness(image: np.ndarray) -> float:
    return float(np.abs(np.diff(image.mean(axis=-1), axis=1)).mean())


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_each_fixed_degradation_changes_the_chip_and_keeps_its_shape(chip: tf.Tensor, name: str) -> None:
    out = degrade(chip, name).numpy()
    assert out.shape == tuple(chip.shape)
    assert out.min() >= -0.5
    assert out.max() <= 255.5
    assert np.abs(out - chip.numpy()).mean() > 0.5


def test_greyscale_has_equal_channels_and_blur_and_small_faces_lose_detail(chip: tf.Tensor) -> None:
    grey = degrade(chip, "greyscale").numpy()
    np.testing.assert_allclose(grey[..., 0], grey[..., 1], atol=1e-4)
    np.testing.assert_allclose(grey[..., 1], grey[..., 2], atol=1e-4)
    sharp = _sharpness(chip.numpy())
    assert _sharpness(degrade(chip, "blur").numpy()) < 0.8 * sharp
    assert _sharpness(degrade(chip, "small40").numpy()) < 0.8 * sharp


def test_zero_probabilities_leave_chips_untouched_and_one_always_applies(chip: tf.Tensor) -> None:
    np.testing.assert_array_equal(Robustness().apply(chip, 96).numpy(), chip.numpy())
    always_grey = Robustness(greyscale=1.0).apply(chip, 96).numpy()
    np.testing.assert_allclose(always_grey[..., 0], always_grey[..., 2], atol=1e-4)
    every = Robustness(greyscale=1.0, blur=1.0, jpeg=1.0, downscale=1.0, downscale_min=24, color_jitter=0.5)
    out = every.apply(chip, 96).numpy()
    assert out.shape == (96, 96, 3)
    assert _sharpness(out) < _sharpness(chip.numpy())


def test_unknown_degradation_is_refused_by_name(chip: tf.Tensor) -> None:
    with pytest.raises(ValueError, match="unknown degradation 'daguerreotype'"):
        degrade(chip, "daguerreotype")
