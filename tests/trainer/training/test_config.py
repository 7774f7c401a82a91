"""The training config: every kind of error names the key and the file; overrides and path resolution."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.errors import ConfigError
from trainer.training.config import TrainConfig, load_config, parse_overrides, resolve_alignment
from trainer.training.run_folder import fill_run_dir

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A valid config in ``tmp_path/configs`` pointing at ``tmp_path/data`` through relative paths."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "labels.csv").write_text("ID,Path,Age\n")
    (tmp_path / "configs").mkdir()
    path = tmp_path / "configs" / "train.json"
    write(path)
    return path


def write(path: Path, **changes: object) -> None:
    data = {
        "img_dir": "../data",
        "csv_path": "../data/labels.csv",
        "img_size": 64,
        "arch_type": "resnet",
        "arch_subtype": 18,
    } | changes
    path.write_text(json.dumps({k: v for k, v in data.items() if v is not None}))


def error_of(path: Path, overrides: dict | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


def test_relative_paths_resolve_against_the_config_folder(config_file: Path) -> None:
    config = load_config(config_file)
    assert config.img_dir == (config_file.parent.parent / "data").resolve()
    assert config.csv_path.name == "labels.csv"
    assert config.output_dir == (Path.cwd() / "models").resolve()


def test_set_overrides_parse_json_and_resolve_paths_against_cwd(
    config_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    overrides = parse_overrides(["batch_size=8", "model_prefix=x_", "augment=false", "output_dir=out"])
    assert overrides == {"batch_size": 8, "model_prefix": "x_", "augment": False, "output_dir": "out"}
    config = load_config(config_file, overrides)
    assert (config.batch_size, config.model_prefix, config.augment) == (8, "x_", False)
    assert config.output_dir == tmp_path / "out"


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"learning_rte": 0.1}, "learning_rte"),
        ({"batch_size": "16"}, "batch_size"),
        ({"batch_size": 1.5}, "batch_size"),
        ({"logs": 1}, "logs"),
        ({"batch_size": 0}, "batch_size"),
        ({"arch_subtype": 16}, "arch_subtype"),
        ({"arch_type": "vgg", "arch_subtype": 50}, "arch_subtype"),
        ({"arch_type": "inception"}, "arch_type"),
        ({"img_size": 16}, "img_size"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "test_fraction"),
        ({"start_label": 50, "end_label": 10}, "end_label"),
        ({"checkpoint": False, "resume": True}, "resume"),
        ({"run_dir": "runs/{nope}"}, "run_dir"),
        ({"img_dir": "../missing"}, "img_dir"),
        ({"csv_path": "../data/missing.csv"}, "csv_path"),
        ({"img_size": None}, "img_size"),
    ],
)
def test_each_bad_value_is_refused_naming_key_and_file(config_file: Path, changes: dict, key: str) -> None:
    write(config_file, **changes)
    message = error_of(config_file)
    assert key in message
    assert str(config_file) in message


def test_unknown_set_key_is_refused(config_file: Path) -> None:
    message = error_of(config_file, {"epochs": 3})
    assert "epochs" in message
    assert "unknown key" in message


def test_malformed_set_item_is_refused() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_overrides(["batch_size"])


def test_invalid_json_and_missing_file_name_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert str(broken) in error_of(broken)
    assert "not found" in error_of(tmp_path / "absent.json")


def test_run_dir_fields_are_filled(config_file: Path) -> None:
    config = load_config(config_file, {"model_prefix": "p_"})
    assert fill_run_dir(config, "20250101-000000").name == "p_resnet18_20250101-000000"


def test_alignment_comes_from_config_then_align_json_then_defaults(config_file: Path) -> None:
    config = load_config(config_file)
    assert resolve_alignment(config) == {"chip_padding": 0.4, "detector": "hog", "upsample": 0}
    (config.csv_path.parent / "align.json").write_text(json.dumps({"padding": 0.25, "detector": "cnn", "upsample": 1}))
    assert resolve_alignment(config) == {"chip_padding": 0.25, "detector": "cnn", "upsample": 1}
    overridden = load_config(config_file, {"chip_padding": 0.3, "detector": "hog", "upsample": 0})
    assert resolve_alignment(overridden) == {"chip_padding": 0.3, "detector": "hog", "upsample": 0}


@pytest.mark.parametrize("name", ["train_config.json", "train_cpu_small.json"])
def test_shipped_configs_are_valid(name: str) -> None:
    raw = json.loads((REPO / "configs" / name).read_text())
    config = TrainConfig.model_validate(raw)
    for key in ("img_dir", "csv_path", "img_size", "batch_size", "num_epochs", "arch_type", "arch_subtype"):
        assert key in raw
    assert config.arch_type == "resnet"


def test_split_seed_decouples_the_split_from_the_weights_seed(config_file: Path) -> None:
    import pandas as pd

    from trainer.data.dataset import split_by_id

    table = pd.DataFrame({"ID": [str(i) for i in range(200)], "Age": range(200)})

    def test_ids(overrides: dict) -> set[str]:
        seed = load_config(config_file, overrides).split_seed_or_seed
        return set(split_by_id(table, 0.1, 0.2, seed)["test"]["ID"])

    assert load_config(config_file, {"seed": 3}).split_seed_or_seed == 3
    assert test_ids({"seed": 1, "split_seed": 0}) == test_ids({"seed": 2, "split_seed": 0}) == test_ids({"seed": 0})
    assert test_ids({"seed": 1}) != test_ids({"seed": 2})


def test_every_mistake_is_reported_at_once_each_with_its_key(config_file: Path) -> None:
    write(config_file, batch_sise=8, img_size=16, lr_schedule="step", csv_path="../data/gone.csv")
    message = error_of(config_file, {"epochs": 3})
    assert "5 problems" in message
    assert str(config_file) in message
    for expected in ("batch_sise: unknown key (did you mean batch_size?)", "--set epochs: unknown key", "img_size:"):
        assert expected in message
    assert "lr_schedule:" in message
    assert "csv_path: file not found" in message
    assert len(message.splitlines()) == 1


def test_every_broken_rule_between_keys_is_reported(config_file: Path) -> None:
    write(config_file, arch_subtype=19, resume=True, checkpoint=False, warmup_epochs=5, num_epochs=5)
    message = error_of(config_file)
    assert "3 problems" in message
    for key in ("arch_subtype:", "resume:", "warmup_epochs:"):
        assert key in message


def test_reading_a_config_imports_neither_tensorflow_nor_keras(config_file: Path) -> None:
    script = (
        "import sys\nfrom trainer.training.config import load_config\n"
        f"load_config({str(config_file)!r})\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras')))\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_age_train_refuses_a_typo_before_starting_tensorflow(config_file: Path) -> None:
    write(config_file, batch_sise=8)
    started = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "trainer.cli.train", "--config", str(config_file)],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    elapsed = time.perf_counter() - started
    assert run.returncode == 2
    valid = ", ".join(TrainConfig.model_fields)
    expected = f"age-train: error: config {config_file}: batch_sise: unknown key (did you mean batch_size?)"
    assert run.stderr.strip().splitlines() == [f"{expected} (valid keys: {valid})"], "no TensorFlow line"
    assert run.stdout == ""
    assert elapsed < 5, "a typo must not wait for TensorFlow (typically well under a second)"


def test_mistakes_of_single_keys_and_between_keys_come_in_one_run(config_file: Path) -> None:
    write(config_file, batch_sise=8, learning_rate="0.01", arch_subtype=16)
    message = error_of(config_file)
    assert "3 problems" in message
    for expected in ("batch_sise: unknown key", "learning_rate:", "arch_subtype: resnet takes 18, 34, 50, 101, 152"):
        assert expected in message


def test_a_rule_reading_a_failed_key_is_skipped_not_misled(config_file: Path) -> None:
    write(config_file, arch_type="resnett", arch_subtype=16, resume=True, checkpoint=False)
    message = error_of(config_file)
    assert "arch_type:" in message
    assert "arch_subtype:" not in message, "no guess at the architecture a misspelt arch_type meant"
    assert "resume: needs checkpoint" in message
