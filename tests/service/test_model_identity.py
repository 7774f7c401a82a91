"""The model's id is computed once, from the file loaded: GET /model and /health name the weights that answer, even
after the file on disk is replaced, and a file that changes while it loads is refused."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.errors import ConfigError, ModelFileError
from service.main import create_app
from service.model_repository import ModelIdentity, ModelSource
from service.settings import ModelChoice, ServiceSettings
from tests.service.conftest import build_tiny_model_file, image_bytes, wait_until_settled, write_predict_config

PHOTO = image_bytes(seed=5)


def test_model_and_health_report_the_loaded_file_after_it_is_replaced_on_disk(
    tmp_path: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bug: /model re-hashed the file on disk, so it named the new file while the old weights answered."""
    import service.main
    from tests.service.conftest import FakeAligner

    monkeypatch.setattr(service.main, "aligner_from_metadata", lambda metadata, max_faces=None: FakeAligner(1))
    served = tmp_path / "served.h5"
    shutil.copyfile(model_file, served)
    loaded_sha = hashlib.sha256(served.read_bytes()).hexdigest()
    other = build_tiny_model_file(tmp_path / "other.h5", seed=2)
    settings = ServiceSettings(predict_config=write_predict_config(tmp_path / "c.json", served), detect_workers=1)
    with TestClient(create_app(settings)) as client:
        assert wait_until_settled(client) == 200
        before = client.post("/predict", files={"file": ("a.png", PHOTO, "image/png")}).json()["raw_logits"]
        os.replace(other, served)
        info = client.get("/model").json()
        assert info["sha256"] == loaded_sha
        assert info["id"] == f"served@sha256:{loaded_sha[:12]}"
        assert client.get("/health").json()["model"]["id"] == info["id"]
        after = client.post("/predict", files={"file": ("a.png", PHOTO, "image/png")}).json()["raw_logits"]
        assert np.allclose(before, after), "the old weights still answer"

        # Without a repository a reload (SIGHUP) serves the file now at the path, under its own id.
        new_id = client.portal.call(client.app.state.runtime.reloader.reload)  # type: ignore[union-attr,attr-defined]
        assert new_id == f"served@sha256:{hashlib.sha256(served.read_bytes()).hexdigest()[:12]}"
        assert client.get("/model").json()["id"] == new_id


def test_a_file_that_changes_while_it_loads_is_refused(
    tmp_path: Path, config_file: Path, model_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.predictor import load_predictor

    served = tmp_path / "served.h5"
    shutil.copyfile(model_file, served)
    real_of = ModelIdentity.of

    def hash_then_replace(choice: ModelChoice) -> ModelIdentity:
        """The file is renamed over after it was hashed, before it is loaded (a copy of the same weights: only the
        file's stamp shows it)."""
        identity = real_of(choice)
        shutil.copyfile(model_file, tmp_path / "next.h5")
        os.replace(tmp_path / "next.h5", served)
        return identity

    monkeypatch.setattr(ModelIdentity, "of", hash_then_replace)
    choice = ModelSource(ServiceSettings(predict_config=config_file, model_path=served)).preflight()
    with pytest.raises(ModelFileError, match="changed while it was being loaded"):
        load_predictor(choice)


def test_the_id_names_name_version_and_a_short_sha256(tmp_path: Path, config_file: Path, model_file: Path) -> None:
    (tmp_path / "age" / "7").mkdir(parents=True)
    shutil.copyfile(model_file, tmp_path / "age" / "7" / "model.h5")
    choice = ModelSource(ServiceSettings(predict_config=config_file, model_repository=tmp_path / "age")).preflight()
    identity = ModelIdentity.of(choice)
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert identity.id == f"age:7@sha256:{sha[:12]}"
    assert (identity.sha256, identity.bytes) == (sha, model_file.stat().st_size)


def test_repository_versions_are_numeric_folders_newest_first(tmp_path: Path, config_file: Path) -> None:
    for name in ("2", "10", "3.tmp", ".4", "notes", "5"):
        (tmp_path / name).mkdir()
        if name != "5":
            (tmp_path / name / "model.h5").write_bytes(b"x")
    source = ModelSource(ServiceSettings(predict_config=config_file, model_repository=tmp_path))
    assert [candidate.version for candidate in source.versions()] == [10, 2]


def test_a_repository_with_no_version_is_refused_and_one_wins_over_model_path(
    tmp_path: Path, config_file: Path, model_file: Path
) -> None:
    empty = ModelSource(ServiceSettings(predict_config=config_file, model_repository=tmp_path))
    with pytest.raises(ConfigError, match="no version folder"):
        empty.preflight()
    (tmp_path / "3").mkdir()
    shutil.copyfile(model_file, tmp_path / "3" / "model.h5")
    both = ServiceSettings(predict_config=config_file, model_repository=tmp_path, model_path=tmp_path / "other.h5")
    assert ModelSource(both).preflight().model_file == tmp_path / "3" / "model.h5"
