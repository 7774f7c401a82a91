"""Each precision of the forward pass scored on the held-out photos; writes the int8 file and the precision report.

``python -m bench.bench_precision --model models/default.h5`` aligns the held-out photos of ``models/holdout.csv``
and ``--calibration`` training photos (UTKFace rows not in the held-out list, a seeded sample), then for each
engine (TensorFlow float32 and bfloat16, onnxruntime float32 and int8 calibrated on the training chips) reports
held-out MAE, 90% interval coverage, the share of ages that move against TensorFlow float32 and CPU milliseconds
per face at batch 1, 8 and 32 on one thread. It writes, beside the model, ``<stem>.int8.onnx`` and
``<stem>.precision.json`` (``core.precision``: int8 is accepted when MAE is within 0.05 years and coverage within
one point of float32; the service runs it by default only then), and ``bench/results/precision.{md,json}``.
Run it again whenever the ``.h5`` changes: the report names the file's sha256, so a stale one is ignored.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.bench_baseline import UTKFACE, holdout_parser, read_holdout
from bench.run import RESULTS, write_section
from core.artifact import read_metadata
from core.engine import Engine, OnnxEngine, cpu_flags, load_engine
from core.face import FaceAligner
from core.image import read_image
from core.onnx_export import float32_onnx
from core.precision import int8_path, quantize_int8, score, verdict, write_report

BATCHES = (1, 8, 32)


def chips_of(paths: list[Path], aligner: FaceAligner) -> tuple[np.ndarray, np.ndarray]:
    """The largest face's chip of each photo with a face, and the positions of those photos in ``paths``."""
    chips, kept = [], []
    for position, path in enumerate(paths):
        faces = aligner.align(read_image(path))
        if faces:
            chips.append(faces[0].chip)
            kept.append(position)
    return np.stack(chips), np.asarray(kept)


def cpu_ms_per_face(engine: Engine, chips: np.ndarray, batch: int, faces: int = 128) -> float:
    """Median CPU milliseconds per face of ``engine`` at ``batch`` over three rounds of about ``faces`` faces."""
    x = chips[:batch]
    engine.logits(x)
    calls = max(2, faces // batch)
    rounds = []
    for _ in range(3):
        started = time.process_time()
        for _ in range(calls):
            engine.logits(x)
        rounds.append((time.process_time() - started) / (calls * batch) * 1000)
    return round(float(np.median(rounds)), 2)


def engines(model: Path, calibration: np.ndarray) -> Iterator[tuple[str, Engine]]:
    """The four engines, each built only when the previous one is measured; the int8 file is written beside the
    model, calibrated on ``calibration``."""
    yield "tensorflow float32", load_engine(model, "tensorflow", "float32")
    yield "onnxruntime float32", OnnxEngine(float32_onnx(model), "float32")
    quantize_int8(float32_onnx(model), int8_path(model), calibration)
    yield "onnxruntime int8", OnnxEngine(int8_path(model), "int8")
    # Last: oneDNN's bfloat16 rewrite is process-wide and applies to every function traced after it is turned on,
    # so the float32 function above must have been traced (measured) before.
    yield "tensorflow bfloat16", load_engine(model, "tensorflow", "bfloat16")


def measure(model: Path, holdout: pd.DataFrame, train: pd.DataFrame) -> dict[str, Any]:
    """Align, build the engines, score and time each; the JSON body of ``bench/results/precision.json``."""
    meta = read_metadata(model)
    aligner = FaceAligner.from_metadata(meta)
    chips, kept = chips_of([UTKFACE / p for p in holdout["Path"]], aligner)
    ages = holdout["Age"].to_numpy(dtype=np.float64)[kept]
    calibration, _ = chips_of([UTKFACE / p for p in train["Path"]], aligner)
    rows: dict[str, Any] = {}
    reference: dict[str, Any] | None = None
    for name, engine in engines(model, calibration):
        logits = np.concatenate([engine.logits(chips[i : i + 64]) for i in range(0, len(chips), 64)])
        scored = score(logits, ages, meta)
        reference = reference or scored
        rows[name] = verdict(scored, reference) | {
            f"cpu_ms_batch_{b}": cpu_ms_per_face(engine, chips, b) for b in BATCHES
        }
    return {
        "model": model.name,
        "photos": len(holdout),
        "faces": len(chips),
        "calibration_chips": len(calibration),
        "cpu_flags": sorted(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8", "avx512_bf16", "amx_bf16"}),
        "load_average": round(os.getloadavg()[0], 1),
        "engines": rows,
    }


def table(result: dict[str, Any]) -> list[str]:
    """The markdown table of ``result`` (model card, docs and ``bench/RESULTS.md``)."""
    lines = [
        "## precision",
        f"`{result['model']}` on {result['faces']} of {result['photos']} held-out UTKFace photos "
        f"(`models/holdout.csv`); int8 calibrated on {result['calibration_chips']} training chips. Moved: share of "
        "ages that differ from TensorFlow float32. CPU ms per face on one thread "
        f"(load average {result['load_average']} on "
        f"{os.cpu_count()} cores; CPU flags {', '.join(result['cpu_flags']) or 'none'}). Accepted: MAE within 0.05 "
        "years and coverage within 1 point of float32.",
        "",
        "| engine | MAE | 90% coverage | moved (over a year) | accepted | ms/face batch 1 | batch 8 | batch 32 |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, row in result["engines"].items():
        lines.append(
            f"| {name} | {row['mae']:.4f} ({row['mae_change']:+.4f}) | {row['coverage']:.2%} "
            f"({row['coverage_change'] * 100:+.2f} pt) | {row['moved']:.1%} ({row['moved_over_a_year']:.1%}) "
            f"| {'yes' if row['accepted'] else 'no'} "
            f"| {row['cpu_ms_batch_1']} | {row['cpu_ms_batch_8']} | {row['cpu_ms_batch_32']} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = holdout_parser(__doc__.split("\n\n")[0])
    parser.add_argument("--labels", type=Path, default=UTKFACE / "labels.csv", help="all UTKFace rows (ID,Path,Age)")
    parser.add_argument("--calibration", type=int, default=256, help="training photos to calibrate int8 on")
    args = parser.parse_args(argv)
    holdout = read_holdout(args, "bench_precision")
    if holdout is None:
        return 0
    labels = pd.read_csv(args.labels, dtype={"ID": str})
    train = labels[~labels["Path"].isin(holdout["Path"])].sample(args.calibration, random_state=0)
    result = measure(args.model, holdout, train)
    report = {name.split()[-1]: row for name, row in result["engines"].items() if name.startswith("onnxruntime")}
    report |= {"bfloat16": result["engines"]["tensorflow bfloat16"]}
    report["int8"] |= {"file": int8_path(args.model).name}
    write_report(args.model, {"holdout_photos": result["faces"], "precisions": report})
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "precision.json").write_text(json.dumps(result, indent=2) + "\n")
    write_section("precision", table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
