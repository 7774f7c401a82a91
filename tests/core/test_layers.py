"""The backbones' custom layers: dlib's affine and add_prev semantics, ImageNet preprocessing; registered."""

from __future__ import annotations

import keras
import numpy as np

from core.layers import Affine, CaffePreprocess, ZeroPadAdd


def test_zero_pad_add_pads_the_smaller_tensor_at_the_bottom_right_and_last_channels() -> None:
    a = np.ones((1, 2, 2, 2), dtype="float32")
    b = np.full((1, 1, 1, 3), 10.0, dtype="float32")
    out = keras.ops.convert_to_numpy(ZeroPadAdd()([a, b]))
    assert out.shape == (1, 2, 2, 3)
    assert out[0, 0, 0].tolist() == [11.0, 11.0, 10.0]
    assert out[0, 1, 1].tolist() == [1.0, 1.0, 0.0]
    assert out[0, 0, 1].tolist() == [1.0, 1.0, 0.0]


def test_zero_pad_add_of_equal_shapes_is_a_plain_sum() -> None:
    a = np.arange(8, dtype="float32").reshape(1, 2, 2, 2)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(ZeroPadAdd()([a, a])), 2 * a)


def test_affine_scales_and_shifts_each_channel() -> None:
    layer = Affine()
    x = np.ones((1, 2, 2, 3), dtype="float32")
    layer.build(x.shape)
    layer.set_weights([np.array([1.0, 2.0, 3.0], "float32"), np.array([0.0, -1.0, 1.0], "float32")])
    out = keras.ops.convert_to_numpy(layer(x))
    assert out[0, 0, 0].tolist() == [1.0, 1.0, 4.0]


def test_caffe_preprocess_flips_to_bgr_and_subtracts_imagenet_means() -> None:
    x = np.array([[[[255.0, 0.0, 0.0]]]], dtype="float32")
    out = keras.ops.convert_to_numpy(CaffePreprocess()(x))
    np.testing.assert_allclose(out[0, 0, 0], [-103.939, -116.779, 255.0 - 123.68], atol=1e-4)


def test_layers_are_registered_for_safe_loading() -> None:
    for cls in (Affine, ZeroPadAdd, CaffePreprocess):
        name = keras.saving.get_registered_name(cls)
        assert keras.saving.get_registered_object(name) is cls
