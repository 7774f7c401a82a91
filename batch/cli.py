"""``age-batch INPUT OUTPUT``: score a folder, glob, path list or object-store prefix into a Parquet dataset.

Prints a progress bar, then one summary line (photos, faces, errors by code, photos/s, Ray's start-up apart). The
exit status is 0 when the run finished (error rows included), 1 when it could not start or failed. Rerunning the
same command after a crash or ``kill -9`` scores only the photos not yet written (``batch.output``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from batch.model import DEFAULT_COVERAGE, DEFAULT_MODEL
from batch.pipeline import DEFAULT_BATCH_SIZE, BatchJob, run
from core.engine import PRECISIONS, RUNTIMES
from core.errors import AgeEstimationError

__all__ = ["main", "parse_args"]


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> BatchJob:
    """The job the command line describes; exits with a usage message on a bad argument."""
    parser = argparse.ArgumentParser(
        prog="age-batch", description="Estimate the age of every face in a photo archive, on Ray Data, into Parquet."
    )
    parser.add_argument(
        "input", help="a folder (recursive), a glob, or a text file of paths; local or a URI (s3://...)"
    )
    parser.add_argument("output", help="the Parquet dataset folder, local or a URI; a rerun adds only what is missing")
    parser.add_argument(
        "--model",
        type=Path,
        default=Path(os.environ.get("MODEL_PATH") or DEFAULT_MODEL),
        help="the .h5 to use (default: MODEL_PATH, else models/default.h5)",
    )
    parser.add_argument("--address", help="Ray cluster: 'auto' or 'ray://HOST:10001' (default: start a local Ray)")
    parser.add_argument("--num-cpus", type=_positive, help="CPUs to use (default: all; a local Ray gets this many)")
    parser.add_argument("--num-gpus", type=_count, help="GPUs for the model (default: all Ray sees; 0: CPU only)")
    parser.add_argument(
        "--batch-size",
        type=_positive,
        default=DEFAULT_BATCH_SIZE,
        help=f"photos per chunk: one model call and one Parquet part (default: {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--coverage", type=float, default=DEFAULT_COVERAGE, help="age_interval coverage, in (0, 1)")
    parser.add_argument(
        "--runtime",
        choices=RUNTIMES,
        default=os.environ.get("MODEL_RUNTIME", "auto"),
        help="the model's runtime (default: MODEL_RUNTIME, else auto: as age-serve picks it)",
    )
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=os.environ.get("MODEL_PRECISION", "auto"),
        help="the model's precision (default: MODEL_PRECISION, else auto)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if not 0.0 < args.coverage < 1.0:
        parser.error("--coverage must lie in (0, 1)")
    return BatchJob(
        input=args.input,
        output=args.output,
        model=args.model,
        address=args.address,
        num_cpus=args.num_cpus,
        num_gpus=args.num_gpus,
        batch_size=args.batch_size,
        coverage=args.coverage,
        runtime=args.runtime,
        precision=args.precision,
        progress=not args.no_progress,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``age-batch``; return the exit status."""
    job = parse_args(argv)
    try:
        summary = run(job)
    except (AgeEstimationError, OSError, ValueError) as exc:
        print(f"age-batch: {exc}", file=sys.stderr)
        return 1
    print(summary.line(job.output))
    return 0


if __name__ == "__main__":
    sys.exit(main())
