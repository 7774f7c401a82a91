"""age-evaluate and the report metrics: numbers, aligned chips, raw photos through core.face, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.coral import labels_from_probas, probas_from_logits
from tests.trainer.conftest import IMG_SIZE, START
from trainer.cli.evaluate import main
from trainer.evaluation.metrics import age_metrics


def test_age_metrics_by_hand() -> None:
    scores = age_metrics([10, 20, 30, 35], [12, 20, 40, 29])
    assert scores["mae"] == pytest.approx((2 + 0 + 10 + 6) / 4)
    assert scores["rmse"] == pytest.approx(np.sqrt((4 + 0 + 100 + 36) / 4), abs=1e-4)
    assert scores["cs5"] == 0.5
    assert scores["n"] == 4
    assert scores["mae_per_decade"] == {
        "10-19": {"mae": 2.0, "n": 1},
        "20-29": {"mae": 0.0, "n": 1},
        "30-39": {"mae": 8.0, "n": 2},
    }


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict | str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, json.loads(out) if code == 0 else err


def test_aligned_chips_match_the_model_and_count_missing_images(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(0)
    chips = rng.integers(0, 256, (3, IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)
    ages = [12, 15, 19]
    for i, chip in enumerate(chips):
        Image.fromarray(chip).save(tmp_path / f"{i}.png")
    rows = [f"{i},{i}.png,{age}" for i, age in enumerate(ages)] + ["9,gone.png,30"]
    (tmp_path / "labels.csv").write_text("ID,Path,Age\n" + "\n".join(rows) + "\n")

    code, result = run(
        capsys,
        "--model",
        str(model_file),
        "--csv",
        str(tmp_path / "labels.csv"),
        "--images",
        str(tmp_path),
        "--aligned",
        "--plots",
        str(tmp_path / "report"),
    )
    assert code == 0
    assert isinstance(result, dict)
    assert (result["n"], result["unreadable"], result["no_face"]) == (3, 1, 0)
    report = json.loads((tmp_path / "report" / "metrics.json").read_text())
    assert report["mae"] == result["mae"]
    assert sum(cell["n"] for cell in report["mae_per_decade"].values()) == 3
    for png in ("mae_per_decade.png", "predicted_vs_true.png"):
        assert (tmp_path / "report" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    from core.artifact import load_model

    logits = load_model(model_file).predict(chips.astype("float32"), verbose=0)
    predicted = START + labels_from_probas(probas_from_logits(logits))
    assert result["mae"] == pytest.approx(np.abs(predicted - np.array(ages)).mean(), abs=1e-4)
    assert 0.0 <= result["cs5"] <= 1.0


def test_raw_photos_are_aligned_and_faceless_ones_counted(
    tmp_path: Path, model_file: Path, fixtures_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copy(fixtures_dir / "astronaut.png", tmp_path / "face.png")
    Image.new("RGB", (120, 120), (128, 128, 128)).save(tmp_path / "blank.png")
    (tmp_path / "labels.csv").write_text("ID,Path,Age\na,face.png,18\nb,blank.png,40\n")
    code, result = run(
        capsys, "--model", str(model_file), "--csv", str(tmp_path / "labels.csv"), "--images", str(tmp_path)
    )
    assert code == 0
    assert isinstance(result, dict)
    assert (result["n"], result["no_face"], result["unreadable"]) == (1, 1, 0)
    assert set(result) >= {"mae", "rmse", "cs5", "n", "no_face"}


@pytest.mark.parametrize("problem", ["model", "csv", "images"])
def test_bad_inputs_exit_2_naming_the_problem(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    (tmp_path / "labels.csv").write_text("ID,Path\na,x.png\n")
    args = {"model": str(model_file), "csv": str(tmp_path / "labels.csv"), "images": str(tmp_path)}
    if problem == "model":
        args["model"] = str(tmp_path / "absent.h5")
        (tmp_path / "labels.csv").write_text("ID,Path,Age\n")
    elif problem == "images":
        args["images"] = str(tmp_path / "absent")
    code, err = run(capsys, *[part for key, value in args.items() for part in (f"--{key}", value)], "--aligned")
    assert code == 2
    assert isinstance(err, str)
    assert {"model": "absent.h5", "csv": "'Age'", "images": "--images"}[problem] in err


def test_intervals_and_groups_are_scored_and_charted(
    tmp_path: Path, model_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    rows = []
    for i, (age, gender) in enumerate([(12, "0"), (15, "1"), (19, "1"), (13, "0"), (17, "1")]):
        Image.fromarray(rng.integers(0, 256, (IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        rows.append(f"{i},{i}.png,{age},{gender},{i % 2}")
    (tmp_path / "labels.csv").write_text("ID,Path,Age,Gender,Race\n" + "\n".join(rows) + "\n")
    args = ["--model", str(model_file), "--csv", str(tmp_path / "labels.csv"), "--images", str(tmp_path)]
    code, result = run(capsys, *args, "--aligned", "--groups", "Gender,Race", "--plots", str(tmp_path / "out"))
    assert code == 0
    assert isinstance(result, dict)
    assert 0.0 <= result["coverage"] <= 1.0
    assert result["mean_interval_width"] >= 0
    # Coverage and width per decade of true age, every scored face counted once.
    assert sum(decade["n"] for decade in result["by_decade"].values()) == result["n"]
    assert result["calibrated"] is False
    gender = result["groups"]["Gender"]
    assert {value: cell["n"] for value, cell in gender.items()} == {"0": 2, "1": 3}
    assert sum(cell["n"] for cell in result["groups"]["Race"].values()) == 5
    weighted = sum(cell["mae"] * cell["n"] for cell in gender.values()) / 5
    assert weighted == pytest.approx(result["mae"], abs=1e-3)
    report = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(report["intervals"]) == {"0.5", "0.8", "0.9", "0.95"}
    for png in ("groups.png", "coverage.png"):
        assert (tmp_path / "out" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, err = run(capsys, *args, "--aligned", "--groups", "Hair")
    assert code == 2
    assert "'Hair'" in str(err)
