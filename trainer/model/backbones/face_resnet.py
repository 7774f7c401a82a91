"""dlib's face-recognition ResNet (29 convolutions) as a Keras backbone, and its pretrained weights.

The network is ``anet_type`` of dlib's ``examples/dnn_face_recognition_ex.cpp``, trained by Davis King on about
3 million faces of 7,485 people and released into the public domain (``dlib_face_recognition_resnet_model_v1.dat``,
installed by the ``face-recognition-models`` package):

- input: a 150x150 RGB chip cut by ``dlib.get_face_chip(s)`` with padding 0.25; dlib subtracts the channel means
  (122.782, 117.001, 104.298) and divides by 256 (``input_rgb_image_sized``), done here by the first layer;
- stem: 7x7/2 convolution of 32 filters, no padding, affine, ReLU, 3x3/2 max-pool, no padding;
- residual blocks (conv 3x3, affine, ReLU, conv 3x3, affine, add, ReLU): 3 of 32 filters; then 4 of 64, 3 of 128,
  3 of 256 and 1 more of 256, the first of each group downsampling: its first convolution has stride 2 and no
  padding (stride-1 convolutions pad 1), its shortcut is a 2x2/2 average pool zero-padded to the new width;
  where the strided branch comes out one row and column smaller than the shortcut (8 -> 3 vs 4, 4 -> 1 vs 2) dlib's
  ``add_prev`` pads it with zeros at the bottom and right (:class:`core.layers.ZeroPadAdd`);
- global average pooling to 256 features; dlib's own head is a 256 -> 128 dense layer without bias, whose output
  is the face descriptor (:func:`build_descriptor_model`, used to check the weights against dlib itself).

All backbone layers are named ``frn_*``; the CORAL head goes on the pooled 256 features.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
from keras import layers

from core.layers import Affine, ZeroPadAdd
from trainer.model.backbones.dlib_dat import read_dlib_net

__all__ = ["FACE_RESNET_SIZE", "build_descriptor_model", "dlib_weights_path", "face_resnet", "load_dlib_weights"]

FACE_RESNET_SIZE = 150
DLIB_MEANS = (122.782, 117.001, 104.298)
DLIB_SCALE = 256.0
# (filters, blocks) per group, input first; every group after the first starts with a downsampling block.
_GROUPS = ((32, 3), (64, 4), (128, 3), (256, 3), (256, 1))


def dlib_weights_path() -> Path:
    """The installed ``dlib_face_recognition_resnet_model_v1.dat`` (``face-recognition-models`` package)."""
    import face_recognition_models

    return Path(face_recognition_models.face_recognition_model_location())


def _conv_affine(x: Any, filters: int, size: int, stride: int, name: str) -> Any:
    padding = "same" if stride == 1 else "valid"
    x = layers.Conv2D(filters, size, strides=stride, padding=padding, name=f"{name}_conv")(x)
    return Affine(name=f"{name}_affine")(x)


def _block(x: Any, filters: int, down: bool, name: str) -> Any:
    y = _conv_affine(x, filters, 3, 2 if down else 1, f"{name}_a")
    y = layers.ReLU(name=f"{name}_a_relu")(y)
    y = _conv_affine(y, filters, 3, 1, f"{name}_b")
    shortcut = layers.AveragePooling2D(2, strides=2, padding="valid", name=f"{name}_pool")(x) if down else x
    return layers.ReLU(name=f"{name}_relu")(ZeroPadAdd(name=f"{name}_add")([shortcut, y]))


def face_resnet(inputs: Any) -> Any:
    """Backbone on ``inputs`` ``(N, 150, 150, 3)`` RGB float in 0..255 -> pooled features ``(N, 256)``."""
    x = layers.Normalization(mean=list(DLIB_MEANS), variance=[DLIB_SCALE**2] * 3, name="frn_pixels")(inputs)
    x = _conv_affine(x, 32, 7, 2, "frn_stem")
    x = layers.ReLU(name="frn_stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="valid", name="frn_stem_pool")(x)
    for group, (filters, blocks) in enumerate(_GROUPS):
        for block in range(blocks):
            x = _block(x, filters, down=group > 0 and block == 0, name=f"frn_g{group + 1}_b{block + 1}")
    return layers.GlobalAveragePooling2D(name="frn_pool")(x)


def build_descriptor_model(img_size: int = FACE_RESNET_SIZE) -> keras.Model:
    """The whole dlib network: chips ``(N, 150, 150, 3)`` RGB 0..255 -> 128-d face descriptors, as
    ``dlib.face_recognition_model_v1.compute_face_descriptor`` returns them (before any weights are loaded)."""
    inputs = keras.Input((img_size, img_size, 3), name="image")
    features = face_resnet(inputs)
    descriptor = layers.Dense(128, use_bias=False, name="frn_descriptor")(features)
    return keras.Model(inputs, descriptor, name="dlib_face_resnet")


def load_dlib_weights(model: keras.Model, path: str | Path | None = None) -> int:
    """Copy dlib's learnt tensors from ``path`` (default: the installed model) into ``model``'s ``frn_*`` layers.

    Layers are matched in forward order: the 29 convolutions, the 29 affine layers and, when ``model`` has
    ``frn_descriptor``, the final dense layer. Returns the number of layers set. Raises ``ValueError`` when the
    file's layer counts or shapes do not match the network.
    """
    source = Path(path) if path is not None else dlib_weights_path()
    net = read_dlib_net(source)
    convs = [layer for layer in model.layers if isinstance(layer, layers.Conv2D) and layer.name.startswith("frn_")]
    affines = [layer for layer in model.layers if isinstance(layer, Affine) and layer.name.startswith("frn_")]
    if len(convs) != len(net.convs) or len(affines) != len(net.affines):
        raise ValueError(
            f"{source}: {len(net.convs)} convolutions and {len(net.affines)} affine layers, but the network has "
            f"{len(convs)} and {len(affines)}: not dlib's face-recognition ResNet"
        )
    for layer, conv in zip(convs, net.convs, strict=True):
        expected = tuple(layer.kernel.shape)
        if conv.kernel.shape != expected or conv.stride != tuple(layer.strides):
            raise ValueError(f"{source}: {layer.name} expects {expected}/{layer.strides}, file has {conv.kernel.shape}")
        layer.set_weights([conv.kernel, conv.bias])
    for layer, (gamma, beta) in zip(affines, net.affines, strict=True):
        layer.set_weights([gamma, beta])
    count = len(convs) + len(affines)
    names = [layer.name for layer in model.layers]
    if "frn_descriptor" in names and net.fc:
        model.get_layer("frn_descriptor").set_weights([net.fc[0][:256]])
        count += 1
    return count
