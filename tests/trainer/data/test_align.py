"""age-align end to end: outputs, failure reasons, labels, refusals, UTKFace names, resuming after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from core.face import FaceAligner
from core.image import read_image
from trainer.cli.align import main
from trainer.data.align import chip_path, plan

REPO_ROOT = Path(__file__).resolve().parents[3]


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.fixture
def dataset(tmp_path: Path, fixtures_dir: Path) -> tuple[Path, Path]:
    """A tiny dataset with two faces and one image for each way an image can fail."""
    images = tmp_path / "images"
    (images / "a").mkdir(parents=True)
    (images / "b").mkdir()
    shutil.copy(fixtures_dir / "astronaut.png", images / "a" / "astronaut.png")
    shutil.copy(fixtures_dir / "2008_001009.jpg", images / "a" / "two_people.jpg")
    Image.new("RGB", (200, 200), (128, 128, 128)).save(images / "b" / "blank.png")
    data = (fixtures_dir / "2008_001009.jpg").read_bytes()
    (images / "b" / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (images / "b" / "notes.jpg").write_text("not an image")
    shutil.copy(fixtures_dir / "astronaut.png", images / "b" / "old.png")
    rows = [
        ("1", "a/astronaut.png", 40),
        ("2", "a/two_people.jpg", 30),
        ("3", "b/blank.png", 25),
        ("4", "b/truncated.jpg", 50),
        ("5", "b/notes.jpg", 50),
        ("6", "b/missing.jpg", 60),
        ("7", "../outside.png", 60),
        ("8", "b/old.png", 90),
    ]
    csv = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["ID", "Path", "Age"]).assign(Gender=0).to_csv(csv, index=False)
    return images, csv


def align(images: Path, csv: Path, out: Path, *extra: str) -> int:
    return main(["--images", str(images), "--csv", str(csv), "--out", str(out), "--workers", "1", *extra])


def test_aligns_writes_labels_and_reasons_and_leaves_input_alone(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, csv = dataset
    before = snapshot(images)
    out = tmp_path / "out"
    assert align(images, csv, out, "--end-label", "80") == 0
    assert snapshot(images) == before

    labels = pd.read_csv(out / "labels.csv", dtype={"ID": str})
    assert list(labels.columns) == ["ID", "Path", "Age", "scaled"]
    assert labels["Path"].tolist() == ["a/astronaut.jpg", "a/two_people.jpg"]
    # Default start label: the smallest age in the data (25, an image that then fails), so scaled = Age - 25.
    assert labels["scaled"].tolist() == [15, 5]
    failed = pd.read_csv(out / "failed.csv")
    assert list(failed.columns) == ["Path", "reason"]
    assert dict(zip(failed["Path"], failed["reason"], strict=True)) == {
        "../outside.png": "bad_path",
        "b/blank.png": "no_face",
        "b/missing.jpg": "missing",
        "b/notes.jpg": "unsupported",
        "b/old.png": "age_out_of_range",
        "b/truncated.jpg": "unreadable",
    }
    assert failed["Path"].tolist() == sorted(failed["Path"])
    assert not (tmp_path / "outside.jpg").exists()

    chip = Image.open(out / "a" / "two_people.jpg")
    assert (chip.format, chip.mode, chip.size) == ("JPEG", "RGB", (128, 128))
    faces = FaceAligner(chip_size=128, padding=0.4).align(read_image(images / "a" / "two_people.jpg"))
    assert len(faces) == 2
    written = np.asarray(chip, dtype=int)
    assert np.abs(written - faces[0].chip).mean() < 4 < np.abs(written - faces[1].chip).mean()

    record = json.loads((out / "align.json").read_text())
    assert (record["img_size"], record["padding"], record["start_label"], record["end_label"]) == (128, 0.4, 25, 80)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("aligned 2, failed 6 (")


def test_rerun_recomputes_nothing_and_writes_the_same_csvs(dataset: tuple[Path, Path], tmp_path: Path) -> None:
    images, csv = dataset
    out = tmp_path / "out"
    assert align(images, csv, out, "--start-label", "20", "--img-size", "64") == 0
    first = {name: (out / name).read_bytes() for name in ("labels.csv", "failed.csv")}
    chip_time = (out / "a" / "astronaut.jpg").stat().st_mtime_ns
    assert align(images, csv, out, "--start-label", "20", "--img-size", "64") == 0
    assert {name: (out / name).read_bytes() for name in first} == first
    assert (out / "a" / "astronaut.jpg").stat().st_mtime_ns == chip_time
    assert json.loads((out / "align.json").read_text())["images_this_run"] == 0
    assert pd.read_csv(out / "labels.csv")["scaled"].tolist() == [20, 10, 70]
    assert Image.open(out / "a" / "astronaut.jpg").size == (64, 64)


def test_changed_chip_settings_are_refused(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, csv = dataset
    out = tmp_path / "out"
    assert align(images, csv, out, "--img-size", "64") == 0
    capsys.readouterr()
    assert align(images, csv, out, "--img-size", "96") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "img_size=64" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--csv", "{csv}", "--out", "{images}/out"], "must not be inside --images"),
        (["--csv", "{csv}", "--out", "{tmp}"], "must not be inside --images"),
        (["--csv", "{tmp}/nope.csv", "--out", "{tmp}/out"], "is not a file"),
        (["--csv", "{csv}", "--out", "{csv}"], "is a file, not a folder"),
        (["--csv", "{csv}", "--out", "{tmp}/a"], "holds no earlier age-align output"),
        (["--csv", "{csv}", "--utkface", "--out", "{tmp}/out"], "not allowed with"),
        (["--csv", "{csv}"], "--out"),
        (["--csv", "{csv}", "--out", "{tmp}/out", "--workers", "0"], "--workers must be at least 1"),
        (["--csv", "{csv}", "--out", "{tmp}/out", "--padding", "-1"], "--padding must be >= 0"),
        (["--csv", "{csv}", "--out", "{tmp}/out", "--start-label", "50", "--end-label", "40"], "below the start"),
    ],
    ids=[
        "out-in-images",
        "images-in-out",
        "no-csv",
        "out-is-file",
        "out-not-ours",
        "csv-and-utkface",
        "no-out",
        "workers",
        "padding",
        "labels",
    ],
)
def test_bad_command_lines_exit_2_with_one_line(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    images, csv = dataset
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "notes.txt").write_text("someone else's folder")
    before = snapshot(tmp_path)
    args = ["--images", str(images)] + [a.format(csv=csv, images=images, tmp=tmp_path) for a in argv]
    try:
        code = main(args)
    except SystemExit as exit_:
        code = exit_.code  # type: ignore[assignment]
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert message in err
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("ID,File,Age\n1,a/astronaut.png,3\n", "column(s) 'Path' missing"),
        ("ID,Path,Age\n1,a/astronaut.png,3\n2,a/two_people.jpg,thirty\n", "'Age': not a number on line 3"),
        ("ID,Path,Age\n1,a/astronaut.png,-3\n", "whole numbers >= 0"),
    ],
)
def test_bad_csv_exits_2_naming_the_problem(
    dataset: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    images, _ = dataset
    csv = tmp_path / "bad.csv"
    csv.write_text(content)
    assert align(images, csv, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert message in err
    assert str(csv) in err


def test_utkface_names_give_ages_and_ids(tmp_path: Path, fixtures_dir: Path) -> None:
    images = tmp_path / "utk"
    images.mkdir()
    face = Image.open(fixtures_dir / "astronaut.png")
    face.save(images / "26_1_0_20170116174525125.jpg.chip.jpg")
    face.save(images / "3_0_20161219140530307.jpg.chip.jpg")  # a UTKFace name without the race field
    face.save(images / "portrait.jpg")
    (images / "labels.csv").write_text("not an image, ignored\n")
    out = tmp_path / "out"
    assert main(["--images", str(images), "--utkface", "--out", str(out), "--workers", "1"]) == 0
    labels = pd.read_csv(out / "labels.csv", dtype={"ID": str})
    assert labels["ID"].tolist() == ["20170116174525125", "20161219140530307"]
    assert labels["Age"].tolist() == [26, 3]
    assert labels["scaled"].tolist() == [23, 0]
    assert pd.read_csv(out / "failed.csv").to_dict("records") == [{"Path": "portrait.jpg", "reason": "bad_name"}]


# ``age-align`` whose worker never finishes the image named by the first argument (pool workers are forked, so
# they inherit the patched function); the other arguments are age-align's.
HOLD_ONE_IMAGE = """
import sys, threading
import trainer.data.align as align
from trainer.cli.align import main

held, align_one = sys.argv.pop(1), align._align_one


def holding(rel):
    if rel == held:
        threading.Event().wait()
    return align_one(rel)


align._align_one = holding
sys.exit(main())
"""


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(utkface_dir: Path, tmp_path: Path) -> None:
    rows = pd.read_csv(utkface_dir / "labels.csv").sample(60, random_state=3)
    csv = tmp_path / "subset.csv"
    rows.to_csv(csv, index=False)
    env = os.environ | {"PYTHONPATH": str(REPO_ROOT)}

    def command(out: Path, held: str | None = None) -> list[str]:
        paths = ["--images", str(utkface_dir), "--csv", str(csv), "--out", str(out)]
        if held is None:
            return [sys.executable, "-m", "trainer.cli.align", *paths, "--workers", "2"]
        # The same command, except that the image ``held`` is never finished: the run cannot end before the
        # kill, however fast the machine aligns the others.
        return [sys.executable, "-c", HOLD_ONE_IMAGE, held, *paths, "--workers", "2"]

    reference, resumed = tmp_path / "reference", tmp_path / "resumed"
    subprocess.run(command(reference), check=True, capture_output=True, env=env, cwd=REPO_ROOT)

    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    held = sorted(rows["Path"])[len(rows) // 2]
    # A new session, so that the kill takes the worker processes too, as a killed job or a lost machine would.
    job = subprocess.Popen(command(resumed, held), env=env, cwd=REPO_ROOT, start_new_session=True, **quiet)
    journal = resumed / ".age-align" / "journal.jsonl"
    deadline = time.monotonic() + 60
    while job.poll() is None and time.monotonic() < deadline:
        if journal.is_file() and journal.read_text().count("\n") >= 10:
            os.killpg(job.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    assert job.wait() == -signal.SIGKILL, "the run ended before 10 images were journalled"
    assert not (resumed / "labels.csv").exists()
    assert f'"path": "{held}"' not in journal.read_text(), "the held image was never held"
    finished = [chip_path(json.loads(line)["path"]) for line in journal.read_text().splitlines()[:10]]
    kept = {rel: (resumed / rel).stat().st_mtime_ns for rel in finished if (resumed / rel).is_file()}

    subprocess.run(command(resumed), check=True, capture_output=True, env=env, cwd=REPO_ROOT)
    for name in ("labels.csv", "failed.csv"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes()
    chips = sorted(p.relative_to(reference) for p in (reference / "images").glob("*.jpg"))
    assert chips == sorted(p.relative_to(resumed) for p in (resumed / "images").glob("*.jpg"))
    assert all((resumed / c).read_bytes() == (reference / c).read_bytes() for c in chips)
    assert kept
    assert {rel: (resumed / rel).stat().st_mtime_ns for rel in kept} == kept
    assert json.loads((resumed / "align.json").read_text())["images_this_run"] <= 50
    assert list((resumed / ".age-align" / "tmp").iterdir()) == []


def test_plan_gives_each_left_out_row_its_reason() -> None:
    rows = pd.DataFrame(
        {
            "ID": ["a", "b", "c", "d", "e", "f", "g"],
            "Path": ["x/a.png", "x/a.jpg", "", "/abs.jpg", "../up.jpg", "x/old.jpg", "x/kid.jpg"],
            "Age": [30, 30, 30, 30, 30, 99, 5],
        }
    )
    todo, failed = plan(rows, start=10, end=80)
    assert todo["Path"].tolist() == ["x/a.jpg"]  # sorted first, so it keeps the chip path x/a.jpg
    assert failed == {
        "x/a.png": "duplicate_path",
        "": "bad_path",
        "/abs.jpg": "bad_path",
        "../up.jpg": "bad_path",
        "x/old.jpg": "age_out_of_range",
        "x/kid.jpg": "age_out_of_range",
    }
