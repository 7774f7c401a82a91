"""``age-demo -p DIR --out DIR``: the service's predictor run over a folder of photos, one JSON file per photo.

Each ``OUT/<image file name>.json`` holds exactly the ``POST /predict`` body. Photos are decoded and aligned in a
thread pool (one dlib aligner per thread) while the model runs on the faces of ``--batch-size`` photos at a time.
Files that are not images, or show no face, are skipped with their reason; the exit status is 1 when no photo
could be processed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from core.errors import AgeEstimationError, ImageError, NoFaceError, UnreadableImageError
from core.image import decode_reduced
from service.alignment import Aligner, aligner_from_metadata, full_size_box
from service.options import DEFAULT_COVERAGE, AnswerOptions
from service.settings import ServiceSettings, choose_model, load_settings
from service.shard import parse_shard, select

if TYPE_CHECKING:
    from service.predictor import Predictor


@dataclass(frozen=True)
class Found:
    """The faces of one photo, largest first: boxes ``[(l, t, r, b)]`` and chips ``(n, S, S, 3)`` uint8."""

    path: Path
    boxes: list[tuple[int, int, int, int]]
    chips: np.ndarray


@dataclass(frozen=True)
class Skipped:
    path: Path
    reason: str


def find_faces(
    path: Path, aligner: Aligner, max_faces: int, max_pixels: int, decode_side: int | None = None
) -> Found | Skipped:
    """Decode ``path`` and align its faces (at most ``max_faces``); a bad file or no face gives ``Skipped``.

    As in ``age-serve``, a photo larger than ``decode_side`` is decoded reduced (JPEG by ``draft``) and searched and
    aligned there, so both answer the same boxes and ages for the same file; boxes are in full-size pixels.
    """
    try:
        try:
            data = path.read_bytes()
        except OSError as err:
            raise UnreadableImageError(f"cannot read {path}: {err.strerror or err}") from err
        decoded = decode_reduced(data, max_pixels, decode_side)
        faces = list(aligner.align(decoded.rgb))[:max_faces]
        if not faces:
            raise NoFaceError("no face found")
    except (ImageError, NoFaceError) as exc:
        return Skipped(path, str(exc))
    boxes = [full_size_box(face.box, decoded.factor, decoded.full_size) for face in faces]
    return Found(path, boxes, np.stack([face.chip for face in faces]))


def write_json_atomically(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one, never a part."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp_name, path)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)


def _batches(items: Iterator[Found | Skipped], size: int) -> Iterator[list[Found | Skipped]]:
    batch: list[Found | Skipped] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass
class Summary:
    """What a run did: photos with a JSON written, faces in them, and the skipped files with reasons."""

    processed: int = 0
    faces: int = 0
    skipped: list[Skipped] = field(default_factory=list)


def predict_folder(
    files: Sequence[Path],
    out: Path,
    predictor: Predictor,
    aligner: Aligner,
    settings: ServiceSettings,
    batch_size: int,
    progress: bool = True,
    options: AnswerOptions | None = None,
) -> Summary:
    """Write ``out/<name>.json`` for every photo in ``files`` with a face; photos go through the model in batches.

    Decoding and alignment run in ``settings.detect_workers`` threads, ahead of the model, in file order.
    ``progress`` shows a tqdm bar and prints each skipped file with its reason.
    """
    summary = Summary()
    with (
        ThreadPoolExecutor(settings.detect_workers, thread_name_prefix="align") as pool,
        tqdm(total=len(files), unit="img", desc="age-demo", disable=not progress) as bar,
    ):
        found = pool.map(
            lambda path: find_faces(path, aligner, settings.max_faces, settings.max_pixels, settings.decode_side),
            files,
        )
        for batch in _batches(found, batch_size):
            images = [item for item in batch if isinstance(item, Found)]
            for item in batch:
                if isinstance(item, Skipped):
                    summary.skipped.append(item)
                    if progress:
                        bar.write(f"skipped {item.path.name}: {item.reason}")
            if images:
                logits = predictor.logits(np.concatenate([image.chips for image in images]))
                start = 0
                for image in images:
                    rows = logits[start : start + len(image.boxes)]
                    start += len(image.boxes)
                    body = predictor.response(image.boxes, rows, options)
                    write_json_atomically(out / f"{image.path.name}.json", body.model_dump_json())
                    summary.faces += len(image.boxes)
                summary.processed += len(images)
            bar.update(len(batch))
    return summary


def align_workers() -> int:
    """Align threads for ``age-demo`` by default: the cores less the one the model and the JSON files keep busy.

    With the int8 model a photo's alignment costs about three times its forward pass, so one core runs the model
    thread beside the aligners; on 2 loaded cores one aligner spent 0.81x the CPU per photo of two at 1.10x the rate
    (4 paired runs of 240 photos, load average 24).
    """
    return max(1, (os.cpu_count() or 1) - 1)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="age-demo", description="Estimate the age of every face in every photo of a folder."
    )
    parser.add_argument("-p", "--path", type=Path, required=True, help="folder of photos (not searched recursively)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the JSON files (created if needed)")
    parser.add_argument("--config", type=Path, help="predict config (default: PREDICT_CONFIG, else configs/...)")
    parser.add_argument("--model", type=Path, help="the .h5 to use (default: MODEL_PATH, else the config's)")
    parser.add_argument("--batch-size", type=int, default=32, help="photos per model call (default: 32)")
    parser.add_argument(
        "--workers", type=int, help="decode/align threads (default: DETECT_WORKERS, else the cores less one)"
    )
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE, help="age_interval coverage, in (0, 1)")
    parser.add_argument("--min-age", type=int, help="adds p_at_least and at_least for this age (years)")
    parser.add_argument(
        "--shard",
        help="I/N: only shard I (from 0) of N, chosen by file name; a bare N takes I from JOB_COMPLETION_INDEX",
    )
    args = parser.parse_args(argv)
    if not 0.0 < args.coverage < 1.0:
        parser.error("--coverage must lie in (0, 1)")
    if args.batch_size < 1:
        parser.error("--batch-size must be >= 1")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be >= 1")
    if args.shard is not None:
        try:
            args.shard = parse_shard(args.shard)
        except ValueError as exc:
            parser.error(str(exc))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``age-demo``; return the exit status (0: at least one photo processed)."""
    args = _parse_args(argv)
    try:
        workers = args.workers or (None if "DETECT_WORKERS" in os.environ else align_workers())
        settings = load_settings(model_path=args.model, predict_config=args.config, detect_workers=workers)
        choice = choose_model(settings)
        if not args.path.is_dir():
            raise AgeEstimationError(f"{args.path}: not a folder")
        args.out.mkdir(parents=True, exist_ok=True)
    except (AgeEstimationError, OSError) as exc:
        print(f"age-demo: {exc}", file=sys.stderr)
        return 1
    files = sorted(path for path in args.path.iterdir() if path.is_file() and not path.name.startswith("."))
    if args.shard is not None:
        files = select(files, *args.shard)

    # The model's runtime is imported only now, so that a bad argument or config is refused at once.
    from service.predictor import settings_loader

    try:
        predictor = settings_loader(settings)(choice)
        aligner = aligner_from_metadata(choice.metadata, settings.max_faces)
    except (AgeEstimationError, OSError, ValueError) as exc:
        print(f"age-demo: {exc}", file=sys.stderr)
        return 1

    options = AnswerOptions(coverage=args.coverage, min_age=args.min_age)
    summary = predict_folder(files, args.out, predictor, aligner, settings, args.batch_size, options=options)
    print(
        f"age-demo: {summary.processed} of {len(files)} files processed ({summary.faces} faces) -> {args.out}; "
        f"{len(summary.skipped)} skipped"
    )
    return 0 if summary.processed else 1


if __name__ == "__main__":
    sys.exit(main())
