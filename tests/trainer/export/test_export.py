"""age-export: each format, run by its own runtime, gives the .h5's logits on real face chips; a failed check writes
nothing. One conversion per format and model per session (module-scoped fixtures keep `make test` short)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.artifact import read_metadata
from trainer.cli.export import main
from trainer.export import export as export_module
from trainer.export.export import ExportCheckError, export, face_chips
from trainer.export.formats import FORMATS, SUFFIXES, run_export

ROOT = Path(__file__).resolve().parents[3]
SHIPPED = ROOT / "models" / "default.h5"
SIZE = 32
CHECK_CHIPS = 64


def _small_model_file(path: Path) -> Path:
    """A small CORAL model built from the custom core layers a dlib backbone uses, with flip averaging."""
    import keras

    from core.artifact import save_model
    from core.coral import CoralLayer
    from core.layers import Affine, ZeroPadAdd
    from core.tta import with_flip_averaging

    keras.utils.set_random_seed(1)
    inputs = keras.Input((SIZE, SIZE, 3))
    # A Normalization given its statistics holds them as constants, not variables (as the face_resnet backbone's).
    x = keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0] * 3)(inputs)
    a = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    a = Affine()(a)
    b = keras.layers.Conv2D(6, 3, strides=2, padding="valid")(x)
    x = keras.layers.ReLU()(ZeroPadAdd()([a, b]))
    x = keras.layers.GlobalAveragePooling2D()(x)
    network = keras.Model(inputs, CoralLayer(20, bias_spread=4.0)(x))
    metadata = {
        "start_label": 10,
        "num_classes": 20,
        "img_size": SIZE,
        "chip_padding": 0.25,
        "threshold": 0.5,
        "arch_type": "tiny-test",
        "arch_subtype": 0,
        "calibration": {"scores": [0.1, 0.2]},
    }
    return save_model(with_flip_averaging(network), path, metadata)


@pytest.fixture(scope="module")
def real_photos(utkface_dir: Path) -> Path:
    return utkface_dir / "images"


@pytest.fixture(scope="module")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _small_model_file(tmp_path_factory.mktemp("export") / "small.h5")


@pytest.fixture(scope="module")
def small_exports(small_model: Path, real_photos: Path) -> dict[str, tuple[Path, np.ndarray]]:
    chips = face_chips(real_photos, read_metadata(small_model), CHECK_CHIPS)
    out = small_model.parent
    return {fmt: (export(small_model, fmt, out / f"small{SUFFIXES[fmt]}", chips).path, chips) for fmt in FORMATS}


@pytest.mark.parametrize("fmt", FORMATS)
def test_small_model_with_custom_layers_round_trips(
    fmt: str, small_model: Path, small_exports: dict[str, tuple[Path, np.ndarray]]
) -> None:
    from core.artifact import load_model

    path, chips = small_exports[fmt]
    assert len(chips) == CHECK_CHIPS
    reference = np.asarray(load_model(small_model)(chips.astype(np.float32)))
    logits = run_export(fmt, path, chips.astype(np.float32))
    assert np.max(np.abs(logits - reference)) <= 1e-4
    sidecar = json.loads(Path(f"{path}.json").read_text())
    assert sidecar["start_label"] == 10
    assert sidecar["end_label"] == 29
    assert sidecar["img_size"] == SIZE
    assert sidecar["calibration"] == {"scores": [0.1, 0.2]}
    assert sidecar["check"]["chips"] == CHECK_CHIPS
    assert sidecar["check"]["max_abs_logit_diff"] <= 1e-4


def test_savedmodel_has_a_serving_default_signature(small_exports: dict[str, tuple[Path, np.ndarray]]) -> None:
    import tensorflow as tf

    signature = tf.saved_model.load(str(small_exports["savedmodel"][0])).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["chips"]
    assert list(signature.structured_outputs) == ["logits"]


def test_a_failed_check_writes_nothing(
    small_model: Path, small_exports: dict[str, tuple[Path, np.ndarray]], monkeypatch: pytest.MonkeyPatch
) -> None:
    chips = small_exports["onnx"][1][:4]
    monkeypatch.setattr(export_module, "convert", lambda fmt, model, forward, target: target.write_bytes(b"x"))
    monkeypatch.setattr(
        export_module, "run_export", lambda fmt, path, pixels: np.zeros((len(pixels), 19), np.float32) + 5.0
    )
    out = small_model.parent / "broken"
    out.mkdir()
    with pytest.raises(ExportCheckError, match="logits differ"):
        export(small_model, "onnx", out / "m.onnx", chips)
    assert list(out.iterdir()) == []


def test_the_command_line_refuses_a_folder_without_faces(
    small_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "empty").mkdir()
    args = ["--model", str(small_model), "--format", "onnx", "--out", str(tmp_path / "m.onnx")]
    assert main([*args, "--check-images", str(tmp_path / "empty")]) == 2
    assert "no face found" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.is_file(), reason=f"no model committed at {SHIPPED}")
@pytest.mark.parametrize("fmt", FORMATS)
def test_the_shipped_model_round_trips_on_64_real_chips(fmt: str, real_photos: Path, tmp_path: Path) -> None:
    chips = face_chips(real_photos, read_metadata(SHIPPED), CHECK_CHIPS)
    report = export(SHIPPED, fmt, tmp_path / f"age{SUFFIXES[fmt]}", chips)
    assert report.chips == CHECK_CHIPS
    assert report.max_abs_diff <= 1e-4
    sidecar = json.loads(report.sidecar.read_text())
    assert sidecar["source"]["file"] == "default.h5"
    assert len(sidecar["source"]["sha256"]) == 64
