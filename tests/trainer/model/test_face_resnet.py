"""dlib's face-recognition ResNet rebuilt in Keras: the weights read from the installed .dat reproduce dlib itself."""

from __future__ import annotations

from pathlib import Path

import dlib
import numpy as np
import pytest
from PIL import Image

from core.artifact import load_model, save_model
from core.face import FaceAligner
from trainer.model.backbones.dlib_dat import read_dlib_net
from trainer.model.backbones.face_resnet import build_descriptor_model, dlib_weights_path, load_dlib_weights
from trainer.model.build import build_model


@pytest.fixture(scope="module")
def real_chips(fixtures_dir: Path) -> np.ndarray:
    """150-px chips (padding 0.25, as dlib cuts them for this network) of every face in the committed photos."""
    aligner = FaceAligner(chip_size=150, padding=0.25)
    chips = []
    for name in ("astronaut.png", "2008_001009.jpg", "2008_002506.jpg"):
        rgb = np.asarray(Image.open(fixtures_dir / name).convert("RGB"))
        chips += [face.chip for face in aligner.align(rgb)]
    assert len(chips) >= 3
    return np.stack(chips)


def test_descriptors_match_dlib_compute_face_descriptor(real_chips: np.ndarray) -> None:
    model = build_descriptor_model()
    assert load_dlib_weights(model) == 29 + 29 + 1
    ours = model.predict(real_chips.astype("float32"), verbose=0)
    reference = dlib.face_recognition_model_v1(str(dlib_weights_path()))
    theirs = np.stack([np.asarray(reference.compute_face_descriptor(chip)) for chip in real_chips])
    assert ours.shape == (len(real_chips), 128)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # Not trivially equal: different faces give different descriptors.
    assert np.linalg.norm(theirs[0] - theirs[1]) > 0.1


def test_reader_finds_every_learnt_layer_in_forward_order() -> None:
    net = read_dlib_net(dlib_weights_path())
    assert len(net.convs) == 29
    assert len(net.affines) == 29
    assert len(net.fc) == 1
    assert net.convs[0].kernel.shape == (7, 7, 3, 32)
    assert net.convs[0].stride == (2, 2)
    assert net.convs[-1].kernel.shape == (3, 3, 256, 256)
    assert net.fc[0].shape == (256, 128)


def test_reader_refuses_a_truncated_or_foreign_file(tmp_path: Path) -> None:
    data = dlib_weights_path().read_bytes()
    cut = tmp_path / "cut.dat"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"cut\.dat"):
        read_dlib_net(cut)
    other = tmp_path / "other.dat"
    other.write_bytes(b"not a dlib network at all" * 10)
    with pytest.raises(ValueError, match="no convolution layers"):
        read_dlib_net(other)


def test_coral_model_on_dlib_features_saves_and_loads_without_the_trainer(tmp_path: Path) -> None:
    model = build_model("face_resnet", 29, 150, 10, pretrained="dlib")
    assert model.output_shape == (None, 9)
    x = np.random.default_rng(0).uniform(0, 255, (2, 150, 150, 3)).astype("float32")
    meta = {"start_label": 1, "num_classes": 10, "img_size": 150, "chip_padding": 0.25, "threshold": 0.5}
    path = save_model(model, tmp_path / "m.h5", meta | {"arch_type": "face_resnet", "arch_subtype": 29})
    again = load_model(path)
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_pretrained_dlib_differs_from_scratch() -> None:
    dlib_model = build_model("face_resnet", 29, 150, 5, pretrained="dlib")
    scratch = build_model("face_resnet", 29, 150, 5, pretrained=None)
    first = dlib_model.get_layer("frn_stem_conv").get_weights()[0]
    assert np.allclose(first, read_dlib_net(dlib_weights_path()).convs[0].kernel)
    assert not np.allclose(scratch.get_layer("frn_stem_conv").get_weights()[0], first)
