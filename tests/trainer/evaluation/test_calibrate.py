"""age-calibrate: split-conformal calibration written into a model's metadata, atomically, and its refusals."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from core.artifact import read_metadata
from core.calibration import Calibration
from tests.trainer.conftest import IMG_SIZE
from trainer.cli.calibrate import main
from trainer.evaluation.calibrate import calibrate_splits


@pytest.fixture(scope="module")
def chips(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("chips")
    rng = np.random.default_rng(0)
    ages = [12, 15, 19, 25, 11, 14]  # 25 is beyond end_label 20
    for i in range(len(ages)):
        Image.fromarray(rng.integers(0, 256, (IMG_SIZE, IMG_SIZE, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    rows = [f"{i},{i}.png,{age}" for i, age in enumerate(ages)] + ["9,gone.png,30"]
    (folder / "labels.csv").write_text("ID,Path,Age\n" + "\n".join(rows) + "\n")
    return folder


def test_calibration_lands_in_a_new_file_and_leaves_the_model_alone(
    model_file: Path, chips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "calibrated.h5"
    args = ["--model", str(model_file), "--csv", str(chips / "labels.csv"), "--images", str(chips), "--aligned"]
    assert main([*args, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"saved: {out}"
    summary = json.loads(lines[0])
    assert (summary["n"], summary["outside_range"], summary["unreadable"]) == (6, 1, 1)
    # Six faces are too few for a group per decade: one group holds them all, from the first age up.
    first_age = read_metadata(model_file)["start_label"]
    assert [(group["n"], group["predicted_ages"]) for group in summary["groups"]] == [(6, [first_age, None])]
    assert "calibration" not in read_metadata(model_file)
    calibration = Calibration.from_metadata(read_metadata(out))
    assert calibration is not None
    assert (calibration.n, calibration.source, calibration.outside_range) == (6, "labels.csv", 1)
    assert list(calibration.scores) == sorted(calibration.scores)
    with h5py.File(model_file) as a, h5py.File(out) as b:  # the weights are the same bytes
        names: list[str] = []
        a.visit(lambda name: names.append(name) if isinstance(a[name], h5py.Dataset) else None)
        assert names
        for name in names:
            np.testing.assert_array_equal(a[name][()], b[name][()])


@pytest.mark.parametrize("problem", ["csv", "out"])
def test_bad_input_exits_2_and_writes_nothing(
    model_file: Path, chips: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], problem: str
) -> None:
    csv = chips / "labels.csv"
    out = tmp_path / "new.h5"
    if problem == "csv":
        (tmp_path / "bad.csv").write_text("ID,Path\na,0.png\n")
        csv = tmp_path / "bad.csv"
    else:
        out = tmp_path / "new.keras"
    code = main(["--model", str(model_file), "--csv", str(csv), "--images", str(chips), "--aligned", "--out", str(out)])
    assert code == 2
    assert {"csv": "'Age'", "out": ".h5"}[problem] in capsys.readouterr().err
    assert list(tmp_path.glob("*.h5")) == []


def test_calibrate_splits_reports_raw_and_calibrated_test_coverage() -> None:
    """A stand-in model with fixed logits per batch: the report is computed on the test batches only."""

    class Fixed:
        output_shape = (None, 4)

        def predict_on_batch(self, images: np.ndarray) -> np.ndarray:
            return np.asarray(images, dtype=np.float32)

    rng = np.random.default_rng(1)
    centre = rng.uniform(0, 4, 400)
    logits = 10 * (centre[:, None] - np.arange(4)[None, :] - 0.5)
    ranks = np.clip(np.round(centre + rng.normal(0, 1, 400)), 0, 4)
    val = [(logits[:200], ranks[:200])]
    test = [(logits[200:], ranks[200:])]
    entry, report = calibrate_splits(Fixed(), val, test, start_label=1)
    assert entry["n"] == 200
    # Ages 1-5 are one decade: the Mondrian calibration has a single group, covering every rank.
    assert [(group["low"], group["n"]) for group in entry["groups"]] == [(0, 200)]
    assert report["by_decade"]["0-9"]["n"] == 200
    assert set(report["calibrated"]) == {"0.5", "0.8", "0.9", "0.95"}
    assert report["calibrated"]["0.9"]["coverage"] >= 0.85
    assert report["calibrated"]["0.9"]["coverage"] > report["raw"]["0.9"]["coverage"]
