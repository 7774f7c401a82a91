"""age-batch end to end on a local Ray with 2 CPUs and real photos: one row per face or per bad photo, the same ages
as age-demo, and reruns that add only what is missing, even after the run was killed with SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from batch.cli import main
from batch.inputs import list_photos
from batch.model import DEFAULT_MODEL
from batch.pipeline import BatchJob, Summary, run
from core.artifact import file_sha256, model_id
from tests.batch.conftest import BAD_FILES, holdout_photos
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def read(output: Path) -> pd.DataFrame:
    return pd.read_parquet(output)


def parts(output: Path) -> set[str]:
    return {path.name for path in output.glob("part-*.parquet")}


@pytest.fixture(scope="module")
def scored(ray_address: str, photo_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, Path]:
    output = tmp_path_factory.mktemp("scored") / "out"
    summary = run(BatchJob(str(photo_folder), str(output), batch_size=4, num_cpus=2, progress=False))
    return summary, output


def test_every_photo_gets_its_face_rows_or_one_error_row(scored: tuple[Summary, Path], photo_folder: Path) -> None:
    summary, output = scored
    rows = read(output)
    assert sorted(set(rows["path"])) == list_photos(str(photo_folder))
    assert not rows.duplicated(["path", "face"]).any()
    for name, code in BAD_FILES.items():
        (row,) = rows[rows["path"] == str(photo_folder / name)].itertuples()
        assert pd.isna(row.face)
        assert pd.isna(row.result_value)
        assert row.error.startswith(f"{code}: ")
    faces = rows[rows["error"].isna()]
    assert faces.groupby("path")["face"].apply(lambda f: sorted(f) == list(range(len(f)))).all()
    assert len(faces[faces["path"] == str(photo_folder / "group" / "2008_002506.jpg")]) == 3
    assert (faces["age_interval"].map(lambda pair: pair[0] <= pair[1])).all()
    assert (faces["raw_logits"].map(len) == 89).all()
    assert faces["calibrated"].all()
    assert set(rows["model_id"]) == {model_id("default", file_sha256(DEFAULT_MODEL))}
    assert (summary.photos, summary.faces, summary.skipped) == (len(set(rows["path"])), len(faces), 0)
    assert dict(summary.errors) == {"corrupt_image": 1, "unsupported_image": 2, "no_face": 1}


def test_face_zero_has_age_demos_age_and_box(scored: tuple[Summary, Path], photo_folder: Path, tmp_path: Path) -> None:
    from service.demo import main as demo

    assert demo(["-p", str(photo_folder), "--out", str(tmp_path / "demo"), "--batch-size", "8"]) == 0
    rows = read(scored[1]).set_index("path")
    compared = 0
    for answer in (tmp_path / "demo").glob("*.json"):
        body = json.loads(answer.read_text())
        row = rows.loc[[str(photo_folder / answer.name.removesuffix(".json"))]]
        first = row[row["face"] == 0].iloc[0]
        assert (first["result_value"], list(first["box"])) == (body["result_value"], body["box"])
        assert list(first["age_interval"]) == body["age_interval"]
        compared += 1
    assert compared >= 13


def test_a_rerun_scores_nothing_and_a_lost_part_is_scored_alone(
    scored: tuple[Summary, Path], photo_folder: Path, tmp_path: Path
) -> None:
    output = tmp_path / "out"
    shutil.copytree(scored[1], output)
    again = run(BatchJob(str(photo_folder), str(output), batch_size=4, progress=False))
    assert (again.photos, again.skipped) == (0, scored[0].photos)
    lost = sorted(parts(output))[0]
    lost_photos = set(pd.read_parquet(output / lost)["path"])
    (output / lost).unlink()
    repaired = run(BatchJob(str(photo_folder), str(output), batch_size=4, progress=False))
    assert repaired.photos == len(lost_photos)
    assert (
        read(output)
        .sort_values(["path", "face"])
        .reset_index(drop=True)
        .drop(columns="raw_logits")
        .equals(read(scored[1]).sort_values(["path", "face"]).reset_index(drop=True).drop(columns="raw_logits"))
    )


def test_killed_with_sigkill_then_rerun_every_photo_is_there_once(
    ray_address: str, utkface_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing = tmp_path / "photos.txt"
    listing.write_text("".join(f"{path}\n" for path in holdout_photos(utkface_dir, 40)))
    output = tmp_path / "out"
    command = [sys.executable, "-m", "batch.cli", str(listing), str(output), "--batch-size", "2"]
    process = subprocess.Popen(
        [*command, "--address", ray_address, "--no-progress"],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 300
        while len(parts(output)) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(parts(output)) >= 2, "the run wrote no part in time"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    before = parts(output)
    assert len(before) < 20, "the run finished before it was killed: nothing was tested"
    already = sum(len(set(pd.read_parquet(output / part)["path"])) for part in before)

    assert main([str(listing), str(output), "--batch-size", "2", "--no-progress"]) == 0
    rows = read(output)
    assert set(rows["path"]) == {str(path) for path in holdout_photos(utkface_dir, 40)}
    assert not rows.duplicated(["path", "face"]).any()
    assert before <= parts(output)
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"age-batch: {40 - already} photos, ")
    assert f"{already} already written" in summary
