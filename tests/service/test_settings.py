"""Settings and predict config: every bad value is refused with one line naming the key and the file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.errors import ConfigError, ModelFileError
from service.settings import (
    DEFAULT_PREDICT_CONFIG,
    ServiceSettings,
    check_agreement,
    choose_model,
    load_predict_config,
    load_settings,
)

GOOD = {
    "n_classes": 100,
    "start_label": 1,
    "end_label": 100,
    "img_size": 64,
    "threshold": 0.5,
    "model_path": "../models/default.h5",
}
METADATA = {"num_classes": 100, "start_label": 1, "img_size": 64, "chip_padding": 0.25, "threshold": 0.5}


def _write(tmp_path: Path, **changes: object) -> Path:
    config = {**GOOD, **changes}
    config = {key: value for key, value in config.items() if value is not None}
    path = tmp_path / "predict_config.json"
    path.write_text(json.dumps(config))
    return path


def test_the_shipped_predict_config_is_valid() -> None:
    config = load_predict_config(DEFAULT_PREDICT_CONFIG)
    assert config.end_label == config.start_label + config.n_classes - 1
    assert config.resolve_model_path(DEFAULT_PREDICT_CONFIG).parent.name == "models"


def test_model_path_is_relative_to_the_config_folder(tmp_path: Path) -> None:
    path = _write(tmp_path, model_path="sub/m.h5")
    assert load_predict_config(path).resolve_model_path(path) == (tmp_path / "sub" / "m.h5").resolve()


@pytest.mark.parametrize(
    ("changes", "words"),
    [
        ({"colour": "red"}, ["unknown key 'colour'"]),
        ({"n_classes": "100"}, ["'n_classes'", "valid integer"]),
        ({"threshold": 1.5}, ["'threshold'", "less than 1"]),
        ({"img_size": 0}, ["'img_size'"]),
        ({"model_path": None}, ["missing key 'model_path'"]),
        ({"end_label": 80}, ["end_label", "80", "100"]),
    ],
)
def test_bad_predict_config_names_key_and_file(tmp_path: Path, changes: dict, words: list[str]) -> None:
    path = _write(tmp_path, **changes)
    with pytest.raises(ConfigError) as caught:
        load_predict_config(path)
    message = str(caught.value)
    assert str(path) in message
    assert "\n" not in message
    for word in words:
        assert word in message


def test_unreadable_predict_config(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_predict_config(broken)
    with pytest.raises(ConfigError, match="cannot read"):
        load_predict_config(tmp_path / "absent.json")


@pytest.mark.parametrize(
    ("key", "value", "meta_key"),
    [("n_classes", 50, "num_classes"), ("start_label", 0, "start_label"), ("img_size", 32, "img_size")],
)
def test_disagreement_with_the_model_names_both_values(tmp_path: Path, key: str, value: int, meta_key: str) -> None:
    changes = {key: value, "end_label": None}
    merged = {**GOOD, **changes}
    merged["end_label"] = merged["start_label"] + merged["n_classes"] - 1
    config = load_predict_config(_write(tmp_path, **merged))
    with pytest.raises(ConfigError) as caught:
        check_agreement(config, tmp_path / "predict_config.json", METADATA, Path("m.h5"))
    message = str(caught.value)
    assert f"{key} is {value}" in message
    assert f"{meta_key} {METADATA[meta_key]}" in message
    assert "m.h5" in message


def test_metadata_end_label_must_agree_too(tmp_path: Path) -> None:
    config = load_predict_config(_write(tmp_path))
    with pytest.raises(ConfigError, match=r"end_label is 100 but the model m\.h5 has end_label 99"):
        check_agreement(config, tmp_path / "c.json", {**METADATA, "end_label": 99}, Path("m.h5"))


def test_environment_variables_are_typed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_UPLOAD_BYTES", "2048")
    monkeypatch.setenv("BATCH_MAX_WAIT_MS", "7.5")
    settings = load_settings()
    assert settings.max_upload_bytes == 2048
    assert settings.batch_max_wait_ms == 7.5
    assert load_settings(max_upload_bytes=5).max_upload_bytes == 5
    assert ServiceSettings().detect_workers >= 1
    monkeypatch.setenv("MAX_FACES", "many")
    with pytest.raises(ConfigError, match="MAX_FACES"):
        load_settings()


def test_choose_model_reports_a_missing_model_file(tmp_path: Path) -> None:
    path = _write(tmp_path, model_path="absent.h5")
    with pytest.raises(ModelFileError, match=r"absent\.h5"):
        choose_model(ServiceSettings(predict_config=path))
