"""batch.model: the service's answer and model id for the same logits and file, and the shipped copy of the model
on a worker that lacks the driver's file."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

from batch.model import DEFAULT_MODEL, AgeDecoder, ModelFile
from core.artifact import file_sha256, model_id, read_metadata
from core.engine import Engine


class NoEngine(Engine):
    """Stands in for the forward pass: the answer is built from given logits."""

    runtime = "onnxruntime"
    precision = "float32"


@pytest.mark.parametrize("coverage", [0.5, 0.9])
def test_the_ages_are_the_services_for_the_same_logits(coverage: float) -> None:
    from service.options import AnswerOptions
    from service.predictor import Predictor

    metadata = read_metadata(DEFAULT_MODEL)
    rng = np.random.default_rng(7)
    # CORAL's logits fall with the rank (ordered biases); a shared offset per face moves its age.
    logits = (np.sort(rng.normal(0, 4, (64, 89)), axis=1)[:, ::-1] + rng.normal(0, 6, (64, 1))).astype(np.float32)
    served = Predictor(NoEngine(), metadata, float(metadata["threshold"]), "CPU").faces(
        [(0, 0, 1, 1)] * len(logits), logits, AnswerOptions(coverage=coverage)
    )
    ages = AgeDecoder.from_metadata(metadata, coverage).ages(logits)
    assert ages.result_value.tolist() == [face.result_value for face in served]
    assert np.stack([ages.low, ages.high], axis=1).tolist() == [face.age_interval for face in served]
    assert len(set(ages.result_value.tolist())) > 10, "the logits span many ages"


def test_the_model_id_is_the_services_recipe() -> None:
    model = ModelFile.of(DEFAULT_MODEL)
    assert model.id == model_id("default", file_sha256(DEFAULT_MODEL))
    assert model.id.startswith("default@sha256:")
    assert len(model.id.split(":")[-1]) == 12


def test_a_worker_without_the_file_writes_the_shipped_copy_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    original = tmp_path / "driver" / "age.h5"
    original.parent.mkdir()
    shutil.copy(DEFAULT_MODEL, original)
    model = ModelFile.of(original)
    assert model.local_copy() == original.resolve(), "the same file at the same path is used as it is"
    content = original.read_bytes()
    original.write_bytes(b"another file")
    fetched: list[int] = []

    def fetch() -> bytes:
        fetched.append(1)
        return content

    copy = model.local_copy(fetch)
    assert copy != original.resolve()
    assert file_sha256(copy) == model.sha256
    assert model.local_copy(fetch) == copy
    assert len(fetched) == 1
    original.unlink()
    with pytest.raises(FileNotFoundError):
        ModelFile(model.path, "0" * 64, model.id).local_copy()
