"""Old-print effects: each does to a real chip what an old scanned print does, within the pixel range, and the
fixed ``old_photo`` copy is repeatable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from core.face import FaceAligner
from trainer.data import old_photo
from trainer.data.augmentation import Robustness, degrade
from trainer.training.config import TrainConfig


@pytest.fixture(scope="module")
def chip(fixtures_dir: Path) -> tf.Tensor:
    rgb = np.asarray(Image.open(fixtures_dir / "astronaut.png").convert("RGB"))
    return tf.constant(FaceAligner(chip_size=150, padding=0.25).align(rgb)[0].chip.astype("float32"))


def _in_range(image: tf.Tensor, shape: tuple[int, ...]) -> np.ndarray:
    out = image.numpy()
    assert out.shape == shape
    assert out.min() >= 0.0
    assert out.max() <= 255.0
    return out


def _saturation(image: np.ndarray) -> float:
    return float((image.max(axis=-1) - image.min(axis=-1)).mean())


def test_sepia_is_warm_and_desaturated_fade_flattens_and_lifts_blacks(chip: tf.Tensor) -> None:
    before = chip.numpy()
    toned = _in_range(old_photo.sepia(chip, old_photo.Draw(seed=1)), before.shape)
    # Warm: red above blue on average, and hue comes from the tint, not the original colours.
    assert toned[..., 0].mean() > toned[..., 2].mean() + 10
    faded = _in_range(old_photo.fade(chip, old_photo.Draw(seed=1)), before.shape)
    assert faded.std() < 0.9 * before.std()
    assert faded.min() >= 9.0


def test_grain_adds_monochrome_noise_and_halftone_draws_a_screen_then_blurs(chip: tf.Tensor) -> None:
    flat = tf.fill((150, 150, 3), 128.0)
    grainy = _in_range(old_photo.grain(flat, old_photo.Draw(seed=2)), (150, 150, 3))
    assert grainy.std() > 2.0
    np.testing.assert_allclose(grainy[..., 0], grainy[..., 2], atol=1e-3)  # one noise for all three channels
    screened = _in_range(old_photo.halftone(flat, old_photo.Draw(seed=2)), (150, 150, 3))
    assert screened.std() > 1.0  # the dot pattern survives the scanner blur on a flat grey
    assert _saturation(_in_range(old_photo.halftone(chip, old_photo.Draw(seed=2)), (150, 150, 3))) > 0


def test_dust_marks_few_pixels_bright_and_vignette_darkens_corners_not_the_centre() -> None:
    flat = tf.fill((150, 150, 3), 100.0)
    dusty = _in_range(old_photo.dust(flat, old_photo.Draw(seed=3)), (150, 150, 3))
    marked = (dusty[..., 0] > 120).mean()
    assert 0.0 < marked < 0.15
    dark = _in_range(old_photo.vignette(flat, old_photo.Draw(seed=3)), (150, 150, 3))
    assert dark[0, 0, 0] < 0.9 * dark[75, 75, 0]
    assert dark[75, 75, 0] == pytest.approx(100.0, abs=1.0)


def test_the_fixed_old_photo_copy_is_repeatable_and_each_effect_is_a_config_key(chip: tf.Tensor) -> None:
    once, twice = degrade(chip, "old_photo").numpy(), degrade(chip, "old_photo").numpy()
    np.testing.assert_array_equal(once, twice)
    assert np.abs(once - chip.numpy()).mean() > 5.0
    config = TrainConfig.model_validate(
        {
            "img_dir": ".",
            "csv_path": "x.csv",
            "img_size": 150,
            "augment_sepia": 0.3,
            "augment_dust": 1.0,
            "augment_grain": 0.2,
        }
    )
    extra = Robustness.from_config(config)
    assert (extra.sepia, extra.dust, extra.grain, extra.fade) == (0.3, 1.0, 0.2, 0.0)
    always = Robustness(sepia=1.0, fade=1.0, vignette=1.0, halftone=1.0, grain=1.0, dust=1.0)
    out = _in_range(tf.function(lambda x: always.apply(x, 150))(chip), (150, 150, 3))
    assert out.std() < chip.numpy().std()
