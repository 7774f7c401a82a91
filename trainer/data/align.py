"""``age-align``: align every face image of a labelled dataset with :class:`core.face.FaceAligner`.

In: ``--images DIR`` and either ``--csv FILE`` (columns ``ID,Path,Age``, Path relative to DIR; other columns are
ignored) or ``--utkface`` (ages and IDs from UTKFace names ``age_gender_race_timestamp.jpg.chip.jpg``).
Out, under ``--out``: one JPEG chip per aligned image at the input's relative path with the suffix ``.jpg``;
``labels.csv`` (``ID,Path,Age,scaled``, Path relative to OUT, ``scaled = Age - start_label``, sorted by Path);
``failed.csv`` (``Path,reason``, Path relative to DIR, sorted); ``align.json`` (the parameters and counts).

Resumable: each finished image is appended to ``OUT/.age-align/journal.jsonl`` after its chip is in place, so a
rerun with the same arguments skips it; chips are written to a temporary file and renamed, and the CSVs are
assembled from the journal at the end, so a killed run, rerun, gives the same files as an uninterrupted one.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
from PIL import Image
from tqdm import tqdm

from core.errors import ConfigError, ImageError, ImageTooLargeError, UnsupportedImageError
from core.face import FaceAligner
from core.image import read_image
from trainer.data.labels import read_label_csv

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"})
JPEG_QUALITY = 95
STATE_DIR = ".age-align"
IMAGE_ERRORS = ((ImageTooLargeError, "too_large"), (UnsupportedImageError, "unsupported"), (ImageError, "unreadable"))
CHIP_KEYS = ("img_size", "padding", "detector", "upsample", "max_detect_side", "jpeg_quality")


# Set once per worker process by _init_worker: (--images, --out, the process's own aligner).
_state: tuple[Path, Path, FaceAligner] | None = None


def read_rows(args: argparse.Namespace) -> tuple[pd.DataFrame, dict[str, str]]:
    """Input rows (``ID, Path, Age``; Path a POSIX path relative to --images) and rows already failed."""
    if args.utkface:
        return _utkface_rows(args.images)
    where = f"--csv {args.csv}"
    rows, ages = read_label_csv(args.csv, where, ("ID", "Path", "Age"))
    bad = rows.index[(ages < 0) | (ages % 1 != 0)]
    if len(bad):
        raise ConfigError(
            f"{where}: column 'Age' must hold whole numbers >= 0; line {bad[0] + 2} has {rows['Age'][bad[0]]!r}"
        )
    return pd.DataFrame({"ID": rows["ID"], "Path": rows["Path"], "Age": ages.astype(int)}), {}


def _utkface_rows(images: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    records, failed = [], {}
    for path in sorted(images.rglob("*")):
        if path.suffix.lower() not in IMAGE_SUFFIXES or not path.is_file():
            continue
        rel = path.relative_to(images).as_posix()
        parts = path.name.split(".")[0].split("_")
        if len(parts) < 2 or not all(part.isdigit() for part in parts):
            failed[rel] = "bad_name"
            continue
        records.append({"ID": parts[-1], "Path": rel, "Age": int(parts[0])})
    return pd.DataFrame(records, columns=["ID", "Path", "Age"]), failed


def chip_path(rel: str) -> str:
    """Chip location relative to OUT for an input path relative to --images."""
    return PurePosixPath(rel).with_suffix(".jpg").as_posix()


def plan(rows: pd.DataFrame, start: int, end: int | None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Rows to align (one per chip path, sorted by Path then ID) and the reasons the others are left out.

    Reasons, first that applies: ``bad_path`` (absolute, empty or leaving --images), ``duplicate_path`` (a second
    row with the same chip path), ``age_out_of_range`` (outside ``start..end``).
    """
    rows = rows.sort_values(["Path", "ID"], kind="stable").reset_index(drop=True)
    parts = rows["Path"].map(PurePosixPath)
    bad = parts.map(lambda p: not p.name or p.is_absolute() or ".." in p.parts).astype(bool)
    chips = rows["Path"].where(bad, rows["Path"][~bad].map(chip_path))
    duplicate = chips.duplicated() & ~bad
    outside = (rows["Age"] < start) | (rows["Age"] > end if end is not None else False)
    reason = pd.Series(np.select([bad, duplicate, outside], ["bad_path", "duplicate_path", "age_out_of_range"], ""))
    failed = rows.assign(reason=reason)[reason != ""].drop_duplicates("Path")
    return rows[reason == ""].reset_index(drop=True), dict(zip(failed["Path"], failed["reason"], strict=True))


def _init_worker(images: str, out: str, params: dict) -> None:
    global _state
    aligner = FaceAligner(
        chip_size=params["img_size"],
        padding=params["padding"],
        detector=params["detector"],
        upsample=params["upsample"],
        max_detect_side=params["max_detect_side"],
    )
    _state = (Path(images), Path(out), aligner)


def _align_one(rel: str) -> tuple[str, str]:
    """Align one image; returns ``(rel, "")`` once its chip is written, else ``(rel, reason)``."""
    assert _state is not None, "_init_worker runs first"
    images, out, aligner = _state
    source = images / rel
    if not source.is_file():
        return rel, "missing"
    try:
        faces = aligner.align(read_image(source))
    except ImageError as err:
        return rel, next(reason for kind, reason in IMAGE_ERRORS if isinstance(err, kind))
    if not faces:
        return rel, "no_face"
    target = out / chip_path(rel)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = out / STATE_DIR / "tmp" / f"{os.getpid()}.jpg"
    Image.fromarray(faces[0].chip).save(temp, "JPEG", quality=JPEG_QUALITY)
    os.replace(temp, target)
    return rel, ""


def _results(todo: list[str], args: argparse.Namespace, params: dict) -> Iterator[tuple[str, str]]:
    init = (str(args.images), str(args.out), params)
    if args.workers == 1 or len(todo) < 2:
        _init_worker(*init)
        yield from map(_align_one, todo)
        return
    with multiprocessing.Pool(args.workers, initializer=_init_worker, initargs=init) as pool:
        yield from pool.imap_unordered(_align_one, todo, chunksize=4)


def _read_journal(path: Path, out: Path) -> dict[str, str]:
    """Finished images from a previous run; a torn last line (killed mid-write) is ignored."""
    done: dict[str, str] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
                done[entry["path"]] = entry["reason"]
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return {rel: r for rel, r in done.items() if r or (out / chip_path(rel)).is_file()}


def _write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    temp = path.with_name(f".{path.name}.tmp")
    write(temp)
    os.replace(temp, path)


def _check_folders(args: argparse.Namespace) -> None:
    if not args.images.is_dir():
        raise ConfigError(f"--images {args.images} is not a folder")
    if args.csv is not None and not args.csv.is_file():
        raise ConfigError(f"--csv {args.csv} is not a file")
    images, out = args.images.resolve(), args.out.resolve()
    if out == images or out.is_relative_to(images) or images.is_relative_to(out):
        raise ConfigError(f"--out {args.out} must not be inside --images {args.images} (or contain it)")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {args.out} is a file, not a folder")
    earlier = (out / "align.json").is_file() or (out / STATE_DIR).is_dir()
    if out.exists() and any(out.iterdir()) and not earlier:
        raise ConfigError(f"--out {args.out} exists, is not empty and holds no earlier age-align output")
    args.images, args.out = images, out


def _check_params(out: Path, params: dict) -> None:
    record = out / "align.json"
    if record.is_file():
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = [k for k in CHIP_KEYS if before.get(k) != params[k]]
        if changed:
            raise ConfigError(
                f"--out {out} was aligned with other settings ({', '.join(f'{k}={before.get(k)}' for k in changed)})"
                "; use a new --out folder"
            )


def run(args: argparse.Namespace) -> dict:
    """Align the dataset described by ``args``; returns the summary also stored in ``OUT/align.json``."""
    _check_folders(args)
    rows, failed = read_rows(args)
    kept_by_end = rows if args.end_label is None else rows[rows["Age"] <= args.end_label]
    if args.start_label is None and kept_by_end.empty:
        raise ConfigError("no image with a usable age: nothing to align")
    start = int(kept_by_end["Age"].min()) if args.start_label is None else args.start_label
    if args.end_label is not None and args.end_label < start:
        raise ConfigError(f"--end-label {args.end_label} is below the start label {start}")
    todo_rows, skipped = plan(rows, start, args.end_label)
    failed.update(skipped)
    params = {"img_size": args.img_size, "padding": args.padding, "detector": args.detector}
    params |= {"upsample": args.upsample, "max_detect_side": args.max_detect_side, "jpeg_quality": JPEG_QUALITY}
    _check_params(args.out, params)
    state = args.out / STATE_DIR
    shutil.rmtree(state / "tmp", ignore_errors=True)
    (state / "tmp").mkdir(parents=True)
    _write_atomic(args.out / "align.json", lambda p: p.write_text(json.dumps(params, indent=2) + "\n"))
    journal = state / "journal.jsonl"
    done = _read_journal(journal, args.out)
    todo = [rel for rel in todo_rows["Path"] if rel not in done]
    began = time.perf_counter()
    with journal.open("a", encoding="utf-8") as log:
        bar = tqdm(total=len(todo), unit="img", desc="age-align", mininterval=0.5, file=sys.stderr)
        for rel, reason in _results(todo, args, params):
            log.write(json.dumps({"path": rel, "reason": reason}) + "\n")
            log.flush()
            done[rel] = reason
            bar.update()
        bar.close()
    seconds = time.perf_counter() - began
    failed.update({rel: done[rel] for rel in todo_rows["Path"] if done[rel]})
    aligned = todo_rows[[not done[rel] for rel in todo_rows["Path"]]]
    labels = aligned.assign(Path=aligned["Path"].map(chip_path), scaled=aligned["Age"] - start)
    labels = labels[["ID", "Path", "Age", "scaled"]].sort_values(["Path", "ID"], kind="stable")
    failures = pd.DataFrame(sorted(failed.items()), columns=["Path", "reason"])
    _write_atomic(args.out / "labels.csv", lambda p: labels.to_csv(p, index=False))
    _write_atomic(args.out / "failed.csv", lambda p: failures.to_csv(p, index=False))
    summary = params | {
        "start_label": start,
        "end_label": args.end_label,
        "aligned": len(labels),
        "failed": dict(sorted(Counter(failed.values()).items())),
        "images_this_run": len(todo),
        "seconds_this_run": round(seconds, 2),
    }
    _write_atomic(args.out / "align.json", lambda p: p.write_text(json.dumps(summary, indent=2) + "\n"))
    return summary
