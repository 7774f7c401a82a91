"""The self-describing .h5: atomic save, metadata, refusal of bad files, identical outputs in a fresh process."""

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.artifact import METADATA_ATTR, load_model, read_metadata, save_model
from core.coral import CoralLayer
from core.errors import ModelFileError

ROOT = Path(__file__).resolve().parents[2]


def _tiny_model(img_size=32, num_classes=5):
    inputs = keras.Input((img_size, img_size, 3))
    x = keras.layers.Rescaling(1 / 255)(inputs)
    x = keras.layers.Conv2D(4, 3, strides=2)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, CoralLayer(num_classes)(x))


def _metadata(**overrides):
    meta = {
        "start_label": 16,
        "num_classes": 5,
        "img_size": 32,
        "chip_padding": 0.4,
        "threshold": 0.5,
        "arch_type": "resnet",
        "arch_subtype": 18,
    }
    meta.update(overrides)
    return meta


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("artifact") / "model.h5"
    model = _tiny_model()
    save_model(model, path, _metadata(notes={"data": "synthetic"}))
    return model, path


def test_metadata_readable_with_h5py_alone(saved):
    _, path = saved
    with h5py.File(path, "r") as handle:
        meta = json.loads(handle.attrs[METADATA_ATTR])
    assert meta["start_label"] == 16
    assert read_metadata(path)["notes"] == {"data": "synthetic"}


def test_saved_file_is_readable_by_others_as_umask_allows(saved):
    _, path = saved
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask


def test_no_temporary_file_is_left_behind(saved):
    _, path = saved
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.h5"]


def test_fresh_process_gives_identical_outputs(saved, tmp_path):
    model, path = saved
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype("float32")
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np; from core.artifact import load_model;"
        "m = load_model(sys.argv[1]); np.save(sys.argv[3], m.predict(np.load(sys.argv[2]), verbose=0))"
    )
    subprocess.run(
        [sys.executable, "-c", script, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        check=True,
        cwd=ROOT,
    )
    assert np.array_equal(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0))


def test_truncated_file_is_refused(saved, tmp_path):
    _, path = saved
    broken = tmp_path / "broken.h5"
    broken.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ModelFileError, match="truncated or corrupt"):
        read_metadata(broken)
    with pytest.raises(ModelFileError, match=r"broken\.h5"):
        load_model(broken)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.h5")


def test_file_without_metadata_is_refused(tmp_path):
    path = tmp_path / "plain.h5"
    keras.saving.save_model(_tiny_model(), path)
    with pytest.raises(ModelFileError, match="no 'age_estimation' metadata"):
        load_model(path)


def test_metadata_disagreeing_with_model_is_refused(tmp_path):
    with pytest.raises(ModelFileError, match="num_classes=7"):
        save_model(_tiny_model(), tmp_path / "a.h5", _metadata(num_classes=7))
    with pytest.raises(ModelFileError, match="img_size=48"):
        save_model(_tiny_model(), tmp_path / "b.h5", _metadata(img_size=48))
    assert list(tmp_path.iterdir()) == []


def test_load_refuses_edited_metadata(saved, tmp_path):
    _, path = saved
    edited = tmp_path / "edited.h5"
    edited.write_bytes(path.read_bytes())
    with h5py.File(edited, "a") as handle:
        handle.attrs[METADATA_ATTR] = json.dumps(_metadata(img_size=64))
    with pytest.raises(ModelFileError, match="img_size=64"):
        load_model(edited)


def test_missing_required_key_is_refused(tmp_path):
    meta = _metadata()
    del meta["chip_padding"]
    with pytest.raises(ModelFileError, match="chip_padding"):
        save_model(_tiny_model(), tmp_path / "m.h5", meta)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    start=st.integers(0, 50),
    padding=st.floats(0, 1, allow_nan=False),
    threshold=st.floats(0.01, 0.99, allow_nan=False),
    extra=st.dictionaries(st.text("abcdef", min_size=1, max_size=5), st.integers() | st.text(max_size=8)),
)
def test_metadata_round_trip(saved, tmp_path, start, padding, threshold, extra):
    model, _ = saved
    meta = {**extra, **_metadata(start_label=start, chip_padding=padding, threshold=threshold)}
    path = save_model(model, tmp_path / "round.h5", meta)
    assert read_metadata(path) == meta
