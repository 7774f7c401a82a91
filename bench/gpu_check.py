"""``make gpu-check``: the whole path on whatever accelerator this machine has, in a few minutes.

Steps: ``prepare`` aligns a small real set (``--images`` UTKFace photos, ``age-align``), ``train`` runs one epoch of
``age-train`` with the train defaults of ``--config`` (mixed precision where a GPU is seen: ``mixed_precision``
``"auto"``), ``serve`` starts the service on the result and posts photos (one by one and as one batch), and
``measure`` times the model's forward pass at batch 1, 32 and 256. The report, with the device (saying when it
is a CPU), step time and throughput, goes to ``bench/results/gpu.md``.

    python -m bench.gpu_check [--images 300] [--config configs/train_cpu_small.json]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
UTKFACE = ROOT.parent / "shared" / "data" / "utkface"
PHOTOS = ROOT / "tests" / "fixtures"
BATCHES = (1, 32, 256)


def prepare(work: Path, images: int) -> Path:
    """Align ``images`` UTKFace photos (a fixed, age-spread sample) into ``work/aligned``; return its labels.csv."""
    table = pd.read_csv(UTKFACE / "labels.csv")
    sample = table.sample(n=min(images, len(table)), random_state=0)
    csv = work / "sample.csv"
    sample.to_csv(csv, index=False)
    out = work / "aligned"
    _run(
        [
            sys.executable,
            "-m",
            "trainer.cli.align",
            "--images",
            str(UTKFACE),
            "--csv",
            str(csv),
            "--out",
            str(out),
            "--img-size",
            "64",
            "--padding",
            "0.25",
            "--start-label",
            "1",
            "--workers",
            "2",
        ]
    )
    return out / "labels.csv"


def train(work: Path, config: Path, labels: Path) -> tuple[Path, str, float | None]:
    """One epoch of ``age-train``; the saved model, the precision line and Keras' time per step (s)."""
    output = _run(
        [
            sys.executable,
            "-m",
            "trainer.cli.train",
            "--config",
            str(config),
            "--set",
            f"img_dir={labels.parent}",
            "--set",
            f"csv_path={labels}",
            "--set",
            "num_epochs=1",
            "--set",
            "warmup_epochs=0",
            "--set",
            f"output_dir={work / 'models'}",
            "--set",
            f"run_dir={work / 'run'}",
        ]
    )
    lines = output.strip().splitlines()
    precision = next((line for line in lines if line.startswith("precision:")), "precision: ?")
    steps = re.findall(r"(\d+(?:\.\d+)?)(ms|s)/step", output)
    step_s = None if not steps else float(steps[0][0]) / (1000.0 if steps[0][1] == "ms" else 1.0)
    return Path(lines[-1].removeprefix("saved: ")), precision, step_s


def serve(model: Path, work: Path) -> dict[str, object]:
    """Start the app on ``model``, post every fixture photo and one batch of them; status codes and faces."""
    from fastapi.testclient import TestClient

    from core.artifact import read_metadata
    from service.main import create_app
    from service.settings import ServiceSettings

    meta = read_metadata(model)
    config = work / "predict_config.json"
    config.write_text(
        json.dumps(
            {
                "n_classes": meta["num_classes"],
                "start_label": meta["start_label"],
                "end_label": meta["start_label"] + meta["num_classes"] - 1,
                "img_size": meta["img_size"],
                "threshold": 0.5,
                "model_path": str(model),
            }
        )
    )
    photos = sorted(PHOTOS.iterdir())
    with TestClient(create_app(ServiceSettings(predict_config=config))) as client:
        deadline = time.monotonic() + 300
        while client.get("/health/ready").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        device = client.get("/health").json()["device"]
        single = [client.post("/predict", files={"file": (p.name, p.read_bytes())}) for p in photos]
        batch = client.post("/predict/batch", files=[("file", (p.name, p.read_bytes())) for p in photos])
    return {
        "device": device,
        "statuses": [response.status_code for response in single],
        "faces": sum(len(r.json().get("faces", [])) for r in single),
        "batch_items": len(batch.json()["results"]),
    }


def measure(model: Path, repeats: int) -> list[tuple[int, float, float]]:
    """``(batch, seconds per call, chips per second)`` of the model's forward pass, after one warm-up call each."""
    from core.artifact import read_metadata
    from core.engine import load_engine

    meta = read_metadata(model)
    # The engine age-serve would choose on this machine (TensorFlow float32 where a GPU is seen).
    predictor = load_engine(model)
    size = int(meta["img_size"])
    rows = []
    for batch in BATCHES:
        chips = np.random.default_rng(batch).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
        predictor.logits(chips)
        started = time.perf_counter()
        for _ in range(repeats):
            predictor.logits(chips)
        per_call = (time.perf_counter() - started) / repeats
        rows.append((batch, per_call, batch / per_call))
    return rows


def report(
    args: argparse.Namespace,
    precision: str,
    step_s: float | None,
    served: dict[str, object],
    timings: list[tuple[int, float, float]],
    seconds: float,
) -> str:
    device = str(served["device"])
    lines = [
        "## gpu-check",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; device: **{device}**"
        + ("" if device.startswith("GPU") else " (no GPU seen: these are CPU figures)")
        + f"; {precision}; `{args.config.name}`, {args.images} UTKFace photos aligned, one epoch; "
        f"{seconds:.0f} s in all.",
        "",
        f"- training step (Keras, batch of the config): {'?' if step_s is None else f'{step_s * 1000:.1f} ms'}",
        f"- service: /predict on {len(served['statuses'])} photos -> statuses {served['statuses']}, "  # type: ignore[arg-type]
        f"{served['faces']} faces; /predict/batch -> {served['batch_items']} results",
        "",
        "| batch | ms per call | chips/s |",
        "| ---: | ---: | ---: |",
        *(f"| {batch} | {per_call * 1000:.1f} | {rate:.0f} |" for batch, per_call, rate in timings),
    ]
    return "\n".join(lines) + "\n"


def _run(command: list[str]) -> str:
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"gpu-check: {' '.join(command[:3])} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300, help="UTKFace photos to align and train on (300)")
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "train_cpu_small.json")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per batch size (5)")
    args = parser.parse_args(argv)
    if not (UTKFACE / "labels.csv").is_file():
        print(f"gpu-check: needs UTKFace at {UTKFACE}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        work = Path(tmp)
        labels = prepare(work, args.images)
        model, precision, step_s = train(work, args.config, labels)
        served = serve(model, work)
        timings = measure(model, args.repeats)
    text = report(args, precision, step_s, served, timings, time.perf_counter() - started)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
