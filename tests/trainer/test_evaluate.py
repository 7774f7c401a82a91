"""age-evaluate and the report metrics: numbers, aligned chips, raw photos through core.face, bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.artifact import save_model
from core.coral import labels_from_probas, probas_from_logits
from trainer.evaluate import age_metrics, main
from trainer.model import build_model

IMG_SIZE = 32
START = 10


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


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 32 px model for ages 10..20 with its metadata (evaluation does not care how good it is)."""
    model = build_model("resnet", 18, IMG_SIZE, 11, width=8)
    meta = {
        "start_label": START,
        "end_label": START + 10,
        "num_classes": 11,
        "img_size": IMG_SIZE,
        "chip_padding": 0.4,
        "threshold": 0.5,
        "arch_type": "resnet",
        "arch_subtype": 18,
    }
    return save_model(model, tmp_path_factory.mktemp("model") / "m.h5", meta)


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
