"""core.engine: which runtime and precision run a model file, and the engines agreeing with Keras on its logits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from core.artifact import file_sha256
from core.engine import INT8_FLAGS, choose_engine, cpu_flags, load_engine
from core.errors import ModelFileError
from core.precision import int8_path, report_path

VNNI = frozenset({"avx512f", "avx512_vnni"})
PLAIN = frozenset({"avx2", "fma"})


def _model_file(folder: Path, accepted: bool | None = True, stale: bool = False) -> Path:
    """A stand-in ``.h5`` (only its bytes matter to the choice) with an int8 file and a report beside it."""
    model = folder / "m.h5"
    model.write_bytes(b"weights")
    if accepted is not None:
        int8_path(model).write_bytes(b"onnx")
        sha = "0" * 64 if stale else file_sha256(model)
        report = {"model_sha256": sha, "precisions": {"int8": {"accepted": accepted}}}
        report_path(model).write_text(json.dumps(report))
    return model


def test_cpu_flags_reads_the_flags_line(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n\nprocessor\t: 1\nflags\t\t: fpu\n")
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "avx512_vnni"}
    assert cpu_flags(tmp_path / "absent") == frozenset()


def test_auto_runs_accepted_int8_on_a_cpu_with_vnni(tmp_path):
    model = _model_file(tmp_path)
    choice = choose_engine(model, flags=VNNI, gpu=False)
    assert (choice.runtime, choice.precision, choice.int8_file) == ("onnxruntime", "int8", int8_path(model))
    assert INT8_FLAGS & VNNI


@pytest.mark.parametrize(
    ("accepted", "stale", "flags"),
    [(True, False, PLAIN), (False, False, VNNI), (True, True, VNNI), (None, False, VNNI)],
    ids=["no-vnni", "rejected", "report-of-another-file", "no-report"],
)
def test_auto_falls_back_to_onnxruntime_float32(tmp_path, accepted, stale, flags):
    choice = choose_engine(_model_file(tmp_path, accepted, stale), flags=flags, gpu=False)
    assert (choice.runtime, choice.precision) == ("onnxruntime", "float32")


def test_a_gpu_keeps_tensorflow_float32(tmp_path):
    choice = choose_engine(_model_file(tmp_path), flags=VNNI, gpu=True)
    assert (choice.runtime, choice.precision) == ("tensorflow", "float32")


def test_settings_override_the_choice(tmp_path):
    model = _model_file(tmp_path)
    assert choose_engine(model, "tensorflow", flags=VNNI, gpu=False).precision == "float32"
    assert choose_engine(model, precision="float32", flags=VNNI, gpu=False).runtime == "onnxruntime"
    bf16 = choose_engine(model, precision="bfloat16", flags=VNNI, gpu=False)
    assert (bf16.runtime, bf16.precision) == ("tensorflow", "bfloat16")
    # int8 is taken when asked for even without VNNI: the operator knows the machine.
    assert choose_engine(model, precision="int8", flags=PLAIN, gpu=False).precision == "int8"


@pytest.mark.parametrize(
    ("runtime", "precision"), [("onnxruntime", "bfloat16"), ("tensorflow", "int8"), ("auto", "int8"), ("x", "auto")]
)
def test_impossible_pairs_are_refused_by_name(tmp_path, runtime, precision):
    model = _model_file(tmp_path, accepted=False)
    with pytest.raises(ModelFileError, match=r"runtime|precision|PRECISION"):
        choose_engine(model, runtime, precision, flags=VNNI, gpu=False)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.service.conftest import build_tiny_model_file

    return build_tiny_model_file(tmp_path_factory.mktemp("engine") / "tiny.h5", seed=3)


def test_onnxruntime_float32_matches_tensorflow_and_is_cached(tiny_model, tmp_path):
    chips = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    reference = load_engine(tiny_model, "tensorflow", "float32")
    engine = load_engine(tiny_model, "onnxruntime", "float32", cache_dir=tmp_path)
    assert engine.name == "onnxruntime float32"
    np.testing.assert_allclose(engine.logits(chips), reference.logits(chips), atol=1e-4)
    assert engine.logits(chips[:0]).shape == (0, reference.logits(chips).shape[1])
    (cached,) = tmp_path.glob(f"{file_sha256(tiny_model)}.*.onnx")
    stamp = cached.stat().st_mtime_ns
    load_engine(tiny_model, "onnxruntime", "float32", cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == stamp


def test_an_engine_stands_in_for_a_keras_model_in_evaluation_code(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_RUNTIME", "onnxruntime")
    engine = load_engine(tiny_model, cache_dir=tmp_path)
    assert engine.runtime == "onnxruntime"
    chips = np.random.default_rng(2).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    np.testing.assert_array_equal(engine.predict_on_batch(chips.astype(np.float32)), engine.logits(chips))
    assert engine.output_shape == (None, engine.logits(chips).shape[1])


def test_a_model_onnx_cannot_take_runs_on_tensorflow_unless_onnxruntime_was_asked_for(tiny_model, monkeypatch):
    import core.onnx_export

    def refuse(*args: object) -> None:
        raise RuntimeError("ScaleAndTranslate has no ONNX conversion")

    monkeypatch.setattr(core.onnx_export, "float32_onnx", refuse)
    assert load_engine(tiny_model, "auto", "float32").runtime == "tensorflow"
    with pytest.raises(ModelFileError, match="cannot run on onnxruntime"):
        load_engine(tiny_model, "onnxruntime", "float32")


def test_the_cache_folder_is_model_cache_dir_for_every_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from core.onnx_export import default_cache_dir

    monkeypatch.setenv("MODEL_CACHE_DIR", str(tmp_path / "onnx"))
    assert default_cache_dir() == tmp_path / "onnx"
    monkeypatch.delenv("MODEL_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "age-estimation"
