"""age-robustness: scores on clean chips and on every degraded copy, with the MAE each copy adds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.artifact import save_model
from tests.synthetic import synthetic_faces
from trainer.cli.robustness import main
from trainer.data.augmentation import DEGRADATIONS
from trainer.model.build import build_model


def test_reports_every_degradation_with_its_delta(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = synthetic_faces(tmp_path / "data", n=12, size=48)
    model = build_model("resnet", 18, 48, 60, width=8)
    meta = {"start_label": 0, "num_classes": 60, "img_size": 48, "chip_padding": 0.25, "threshold": 0.5}
    path = save_model(model, tmp_path / "m.h5", meta | {"arch_type": "resnet", "arch_subtype": 18})
    out = tmp_path / "robustness.json"
    assert main(["--model", str(path), "--csv", str(csv), "--images", str(csv.parent), "--out", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text())
    assert set(printed) == {"n_missing", "clean", *DEGRADATIONS}
    for name in DEGRADATIONS:
        assert printed[name]["n"] == 12
        assert printed[name]["mae_delta"] == pytest.approx(printed[name]["mae"] - printed["clean"]["mae"], abs=1e-3)


def test_missing_folder_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = synthetic_faces(tmp_path / "data", n=2, size=32)
    model = build_model("resnet", 18, 32, 5, width=8)
    meta = {"start_label": 0, "num_classes": 5, "img_size": 32, "chip_padding": 0.25, "threshold": 0.5}
    path = save_model(model, tmp_path / "m.h5", meta | {"arch_type": "resnet", "arch_subtype": 18})
    assert main(["--model", str(path), "--csv", str(csv), "--images", str(tmp_path / "nowhere")]) == 2
    assert "age-robustness: error: --images" in capsys.readouterr().err
