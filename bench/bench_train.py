"""Training throughput: the tf.data input pipeline against the training step, and the epoch time it implies.

1. For ResNet-18 (base width 64, the paper's) at 64 and 128 px, batch 64: images/s of
   ``trainer.data.dataset.make_dataset`` (training mode: shuffle, random crop, flip, colour jitter) over UTKFace
   chips, once while decoding (first epoch) and once from the in-memory cache (every later epoch), against images/s
   of the training step (``train_on_batch`` with the CORAL loss on in-memory batches, so no input cost). Target: the
   cached pipeline at least 5x faster than the step, so training is never input-bound.
2. Epoch time for ResNet-18 at 64 px on 15,000 chips (80% trained on, 10% validated), estimated from the measured
   step and inference rates, for each ``--epoch-widths``.

Writes ``bench/results/train.md``; run as ``python -m bench.bench_train``. Needs ``../shared/data/utkface``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from bench.run import write_section
from core.coral import coral_loss
from trainer.data.dataset import make_dataset
from trainer.evaluation.metrics import AgeMAE
from trainer.model.build import build_model

ROOT = Path(__file__).resolve().parents[1]
UTKFACE = ROOT.parent / "shared" / "data" / "utkface"
NUM_CLASSES = 90
EPOCH_IMAGES = 15_000


def sample_table(n_images: int) -> pd.DataFrame:
    """A fixed random sample of UTKFace as a clean table (absolute paths, ranks ``Age - 1`` clipped to 0..89)."""
    table = pd.read_csv(UTKFACE / "labels.csv", dtype={"ID": str}).sample(n_images, random_state=0)
    return pd.DataFrame(
        {
            "ID": table["ID"],
            "Path": [str(UTKFACE / p) for p in table["Path"]],
            "Age": table["Age"],
            "label": (table["Age"].clip(1, NUM_CLASSES) - 1).astype(np.int32),
        }
    )


def pipeline_rates(table: pd.DataFrame, img_size: int, batch_size: int) -> tuple[float, float]:
    """Images/s of the training pipeline: first pass (decode + cache), then a cached pass."""
    dataset = make_dataset(table, img_size, batch_size, training=True, augment=True, cache="memory")
    rates = []
    for _ in range(2):
        started = time.perf_counter()
        count = sum(int(images.shape[0]) for images, _ in dataset)
        rates.append(count / (time.perf_counter() - started))
    return rates[0], rates[1]


def step_rates(img_size: int, width: int, batch_size: int, steps: int) -> tuple[float, float]:
    """Images/s of ``train_on_batch`` and of ``predict_on_batch`` (after warm-up) on random in-memory batches."""
    model = build_model("resnet", 18, img_size, NUM_CLASSES, width=width)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=coral_loss(), metrics=[AgeMAE()])
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, img_size, img_size, 3)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, batch_size).astype("int32")
    for _ in range(2):
        model.train_on_batch(images, labels)
        model.predict_on_batch(images)
    started = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(images, labels)
    train_rate = steps * batch_size / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(steps):
        model.predict_on_batch(images)
    return train_rate, steps * batch_size / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1024, help="UTKFace chips through the pipeline")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=12, help="timed training steps per measurement")
    parser.add_argument("--epoch-widths", type=int, nargs="+", default=[48, 64], help="ResNet-18 widths for 2.")
    args = parser.parse_args(argv)
    if not (UTKFACE / "labels.csv").is_file():
        print(f"bench_train: needs {UTKFACE}", file=sys.stderr)
        return 1
    table = sample_table(args.images)
    lines = [
        "## train",
        f"Batch {args.batch_size}; {args.images} UTKFace chips (200x200 JPEG) through the pipeline; "
        f"{args.steps} timed steps after 2 warm-up steps. Images/s:",
        "",
        "| ResNet-18 (width 64) | pipeline, first epoch (decode) | pipeline, cached | training step | "
        "cached pipeline / step |",
        "| --- | --- | --- | --- | --- |",
    ]
    step_at: dict[tuple[int, int], tuple[float, float]] = {}
    verdicts = []
    for img_size in (64, 128):
        cold, warm = pipeline_rates(table, img_size, args.batch_size)
        step_at[(img_size, 64)] = step_rates(img_size, 64, args.batch_size, args.steps)
        ratio = warm / step_at[(img_size, 64)][0]
        verdicts.append(ratio >= 5)
        lines.append(
            f"| {img_size} px | {cold:.0f} | {warm:.0f} | {step_at[(img_size, 64)][0]:.0f} | **{ratio:.1f}x** |"
        )
    lines += [
        "",
        f"The cached pipeline {'meets' if all(verdicts) else 'misses'} the target of at least 5x the step rate "
        "at every size (the first epoch also decodes every JPEG once).",
        "",
        f"Epoch time estimate, ResNet-18 at 64 px, batch {args.batch_size}, {EPOCH_IMAGES:,} chips "
        f"({int(EPOCH_IMAGES * 0.8):,} trained on, {int(EPOCH_IMAGES * 0.1):,} validated):",
        "",
    ]
    for width in args.epoch_widths:
        train_rate, infer_rate = step_at.get((64, width)) or step_rates(64, width, args.batch_size, args.steps)
        seconds = EPOCH_IMAGES * 0.8 / train_rate + EPOCH_IMAGES * 0.1 / infer_rate
        lines.append(
            f"- width {width}: {train_rate:.0f} images/s training, {infer_rate:.0f} images/s inference -> "
            f"**{seconds / 60:.1f} min per epoch**"
        )
    write_section("train", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
