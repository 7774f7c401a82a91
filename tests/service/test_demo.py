"""age-demo: one JSON per photo with the POST /predict body, reasons for skipped files, exit status."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.demo import main
from service.schemas import PredictResponse
from tests.service.conftest import photo_path


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut.png", "2008_002506.jpg", "dogs.jpg"):
        shutil.copy(photo_path(name), folder / name)
    (folder / "notes.txt").write_text("not a photo")
    return folder


def test_demo_writes_the_service_body_for_each_photo(
    photos: Path, tmp_path: Path, config_file: Path, client: TestClient, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    status = main(["-p", str(photos), "--out", str(out), "--config", str(config_file), "--batch-size", "2"])
    assert status == 0
    assert sorted(path.name for path in out.iterdir()) == ["2008_002506.jpg.json", "astronaut.png.json"]
    group = PredictResponse.model_validate_json((out / "2008_002506.jpg.json").read_text())
    assert len(group.faces) == 3
    demo = json.loads((out / "astronaut.png.json").read_text())
    served = client.post(
        "/predict", files={"file": ("a.png", (photos / "astronaut.png").read_bytes(), "image/png")}
    ).json()
    assert demo.keys() == served.keys()
    assert demo["box"] == served["box"]
    assert demo["threshold"] == served["threshold"]
    assert demo["age_interval"] == served["age_interval"]
    assert (demo["coverage"], demo["calibrated"]) == (0.9, False)
    np.testing.assert_allclose(demo["raw_logits"], served["raw_logits"], rtol=1e-4, atol=1e-5)
    captured = capsys.readouterr()
    assert "skipped dogs.jpg: no face found" in captured.out + captured.err
    assert "skipped notes.txt: the content is not an image" in captured.out + captured.err
    assert "2 of 4 files processed (4 faces)" in captured.out


def test_demo_fails_when_nothing_could_be_processed(tmp_path: Path, config_file: Path) -> None:
    folder = tmp_path / "nothing"
    folder.mkdir()
    (folder / "a.txt").write_text("text")
    out = tmp_path / "out"
    assert main(["-p", str(folder), "--out", str(out), "--config", str(config_file)]) == 1
    assert list(out.iterdir()) == []


def test_demo_refuses_a_missing_folder_with_one_line(
    tmp_path: Path, config_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-p", str(tmp_path / "absent"), "--out", str(tmp_path / "o"), "--config", str(config_file)]) == 1
    assert capsys.readouterr().err.strip().count("\n") == 0


def test_demo_skips_a_one_pixel_high_photo_with_its_reason(tmp_path: Path) -> None:
    # A 2048x1 PNG once raised "box can't be empty" inside dlib and ended the whole run.
    from PIL import Image

    from core.face import FaceAligner
    from service.demo import Skipped, find_faces

    path = tmp_path / "panorama.png"
    Image.new("RGB", (2048, 1), (128, 128, 128)).save(path)
    result = find_faces(path, FaceAligner(chip_size=64, padding=0.25), max_faces=5, max_pixels=10**8)
    assert isinstance(result, Skipped)
    assert "no face" in result.reason
