"""Every backbone builds, runs at two image sizes and ends in the CORAL head."""

import numpy as np
import pytest

from core.coral import CoralLayer
from trainer.model.build import ARCHITECTURES, build_model

CASES = [(arch, sub) for arch, subs in ARCHITECTURES.items() for sub in subs]


@pytest.mark.parametrize(("arch_type", "arch_subtype"), CASES)
def test_backbone_builds_and_runs_at_two_sizes(arch_type, arch_subtype):
    # dlib's face network needs 103 pixels or more; the others build from 32.
    for img_size in (112, 150) if arch_type == "face_resnet" else (32, 75):
        model = build_model(arch_type, arch_subtype, img_size, num_classes=6)
        x = np.random.default_rng(0).uniform(0, 255, (2, img_size, img_size, 3)).astype("float32")
        logits = np.asarray(model(x, training=False))
        assert logits.shape == (2, 5)
        assert np.isfinite(logits).all()
        assert isinstance(model.layers[-1], CoralLayer)


def test_pixel_scaling_is_inside_the_model():
    model = build_model("resnet", 18, 32, 4, width=8)
    assert model.layers[1].name == "scale_pixels"


@pytest.mark.parametrize(("arch_type", "arch_subtype"), [("resnet", 20), ("vgg", 11), ("alexnet", 1)])
def test_unknown_architecture_lists_valid_ones(arch_type, arch_subtype):
    with pytest.raises(ValueError, match=r"resnet: 18, 34, 50, 101, 152; vgg: 16, 19"):
        build_model(arch_type, arch_subtype, 64, 5)


def test_too_small_image_is_refused():
    with pytest.raises(ValueError, match="at least 32"):
        build_model("resnet", 18, 16, 5)


def test_face_resnet_refuses_a_chip_too_small_for_its_strided_convolutions():
    with pytest.raises(ValueError, match="face_resnet needs at least 103 pixels"):
        build_model("face_resnet", 29, 96, num_classes=6)


def test_build_model_is_public_as_trainer_model_build_model():
    import trainer.model

    # The contract's name: ``from trainer.model import build_model``, the same function as the module's own.
    assert trainer.model.build_model is build_model
    with pytest.raises(AttributeError):
        trainer.model.no_such_name  # noqa: B018
