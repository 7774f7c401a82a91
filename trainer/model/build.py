"""Backbones with the CORAL head: ResNet 18/34/50/101/152, VGG 16/19 and dlib's face-recognition ResNet 29.

ResNet 18 and 34 use basic blocks (He et al. 2016, Table 1), which ``keras.applications`` lacks, so they are built
here; ResNet 50/101/152 and VGG 16/19 come from ``keras.applications`` (from scratch, or with ImageNet weights or a
weights file, ``pretrained``); ``face_resnet`` 29 is dlib's face-recognition network (``trainer.model.backbones``), with
dlib's weights by default. Every network ends in global average pooling and ``core.coral.CoralLayer``. Pixel
scaling is the model's first layer (each backbone's own: [-1, 1] from scratch, ImageNet's "caffe" means for
ImageNet weights, dlib's means for face_resnet): callers feed RGB float in 0..255 and trainer and service cannot
disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras import layers

from core.coral import CoralLayer
from core.layers import CaffePreprocess
from trainer.model.architectures import ARCHITECTURES, MIN_FACE_RESNET_SIZE
from trainer.model.backbones.face_resnet import face_resnet, load_dlib_weights

__all__ = ["ARCHITECTURES", "build_model"]

MIN_IMG_SIZE = 32

_BASIC_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _applications() -> dict[tuple[str, int], Callable[..., keras.Model]]:
    apps = keras.applications
    return {
        ("resnet", 50): apps.ResNet50,
        ("resnet", 101): apps.ResNet101,
        ("resnet", 152): apps.ResNet152,
        ("vgg", 16): apps.VGG16,
        ("vgg", 19): apps.VGG19,
    }


def _basic_block(x: Any, filters: int, stride: int, name: str) -> Any:
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, name=f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"{name}_conv2")(y)
    # Zero-initialised last BN (Goyal et al. 2017): each block starts as identity, which speeds early training.
    y = layers.BatchNormalization(gamma_initializer="zeros", name=f"{name}_bn2")(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, name=f"{name}_proj")(shortcut)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn")(shortcut)
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([shortcut, y]))


def _basic_resnet(x: Any, depth: int, width: int) -> Any:
    x = layers.Conv2D(width, 7, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same", name="stem_pool")(x)
    for stage, blocks in enumerate(_BASIC_BLOCKS[depth]):
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * 2**stage, stride, name=f"stage{stage + 1}_block{block + 1}")
    return layers.GlobalAveragePooling2D(name="avg_pool")(x)


def is_whole_model_weights(pretrained: str | None) -> bool:
    """Whether ``pretrained`` names a Keras ``.weights.h5`` of a whole CORAL model (head included), such as an
    earlier run's ``checkpoints/best.weights.h5``: training then continues from it instead of a fresh head."""
    return pretrained not in (None, "dlib", "imagenet") and str(pretrained).endswith(".weights.h5")


def build_model(
    arch_type: str,
    arch_subtype: int,
    img_size: int,
    num_classes: int,
    width: int = 64,
    dropout: float = 0.0,
    pretrained: str | None = None,
) -> keras.Model:
    """Build an untrained CORAL network.

    Input: ``(N, img_size, img_size, 3)`` RGB float in 0..255. Output: ``(N, num_classes - 1)`` CORAL logits.
    ``width`` is the channel count of the first stage of ResNet 18/34 (64 in the paper; smaller is cheaper);
    ``dropout`` is applied to the pooled features before the head. ``pretrained``: ``None`` (from scratch),
    ``"dlib"`` (face_resnet), ``"imagenet"`` (keras.applications downloads the weights, or finds them in its cache
    ``~/.keras/models``), or a path: a dlib ``.dat`` for face_resnet, a weights file for the ``keras.applications``
    backbone, or a Keras ``.weights.h5`` of a model of the same architecture (the CORAL head may differ and is then
    left untrained). Raises ``ValueError`` naming the valid choices for an unknown architecture, an image smaller
    than 32 pixels or fewer than 2 classes; whatever Keras raises when weights cannot be fetched or read.
    """
    arch_type = str(arch_type).lower()
    _check(arch_type, int(arch_subtype), int(img_size), int(num_classes))
    depth = int(arch_subtype)
    inputs = keras.Input((img_size, img_size, 3), name="image")
    whole_model_weights = is_whole_model_weights(pretrained)
    if arch_type == "face_resnet":
        features = face_resnet(inputs)
    elif arch_type == "resnet" and depth in _BASIC_BLOCKS:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")(inputs)
        features = _basic_resnet(x, depth, int(width))
    else:
        features = _applications_features(inputs, arch_type, depth, None if whole_model_weights else pretrained)
    if dropout > 0:
        features = layers.Dropout(dropout, name="dropout")(features)
    logits = CoralLayer(num_classes, dtype="float32", name="coral")(features)
    model = keras.Model(inputs, logits, name=f"coral_{arch_type}{depth}")
    if arch_type == "face_resnet" and pretrained is not None and not whole_model_weights:
        load_dlib_weights(model, None if pretrained == "dlib" else pretrained)
    elif whole_model_weights:
        model.load_weights(str(pretrained), skip_mismatch=True)
    return model


def _check(arch_type: str, arch_subtype: int, img_size: int, num_classes: int) -> None:
    """``ValueError`` naming the valid choices for an unknown architecture, a too small image or too few classes."""
    if arch_type not in ARCHITECTURES or arch_subtype not in ARCHITECTURES[arch_type]:
        valid = "; ".join(f"{name}: {', '.join(map(str, subs))}" for name, subs in ARCHITECTURES.items())
        raise ValueError(f"unknown architecture {arch_type}{arch_subtype}; valid ones are {valid}")
    if img_size < MIN_IMG_SIZE:
        raise ValueError(f"img_size must be at least {MIN_IMG_SIZE} pixels (got {img_size})")
    if arch_type == "face_resnet" and img_size < MIN_FACE_RESNET_SIZE:
        raise ValueError(f"img_size: face_resnet needs at least {MIN_FACE_RESNET_SIZE} pixels (got {img_size})")
    if num_classes < 2:
        raise ValueError(f"num_classes must be at least 2 (got {num_classes})")


def _applications_features(inputs: Any, arch_type: str, depth: int, weights: str | None) -> Any:
    """Pooled features of a ``keras.applications`` backbone; with ``weights`` (``"imagenet"`` or a file) its
    ImageNet pixel preprocessing goes inside the model, else the same [-1, 1] scaling as the other backbones."""
    if weights is not None:
        x = CaffePreprocess(name="imagenet_pixels")(inputs)
    else:
        x = layers.Rescaling(1.0 / 127.5, offset=-1.0, name="scale_pixels")(inputs)
    img_size = int(inputs.shape[1])
    backbone = _applications()[(arch_type, depth)](
        include_top=False, weights=weights, input_shape=(img_size, img_size, 3), pooling="avg"
    )
    return backbone(x)
