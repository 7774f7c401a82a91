"""``age-export --model FILE.h5 --format savedmodel|onnx|tflite --out PATH``: the network in another format.

The work is ``trainer.export``: each export is checked against the ``.h5`` on real face chips before it is kept.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from core.artifact import read_metadata
from core.errors import AgeEstimationError
from trainer.cli import command
from trainer.export.export import (
    DEFAULT_CHECK_IMAGES,
    DEFAULT_TOLERANCE,
    ExportCheckError,
    export,
    face_chips,
)
from trainer.export.formats import FORMATS

CHECK_FAILED = 1


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = command.parser(
        "age-export",
        "Export a .h5 age model (chips in, CORAL logits out) as a SavedModel, ONNX or TFLite file, "
        "checked against the .h5 before it is kept.",
    )
    parser.add_argument("--model", type=Path, required=True, help="the .h5 model file")
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to write")
    parser.add_argument("--out", type=Path, required=True, help="SavedModel folder, .onnx or .tflite file")
    parser.add_argument(
        "--check-images",
        type=Path,
        default=DEFAULT_CHECK_IMAGES,
        help="photos whose aligned faces the check runs on (default: the repository's tests/fixtures)",
    )
    parser.add_argument("--check-count", type=int, default=64, help="faces to check at most (default: 64)")
    parser.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE, help="max logit difference (1e-4)")
    args = parser.parse_args(argv)
    if args.check_count < 1:
        parser.error("--check-count must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """``age-export``; exit status 0 when written, 1 when the check failed (nothing written), 2 for bad input."""
    args = _parse_args(argv)

    def body() -> int:
        metadata = read_metadata(args.model)
        if not args.check_images.is_dir():
            raise AgeEstimationError(f"{args.check_images}: --check-images is not a folder")
        chips = face_chips(args.check_images, metadata, args.check_count)
        try:
            report = export(args.model, args.format, args.out, chips, args.tolerance)
        except ExportCheckError as exc:
            print(f"age-export: check failed, nothing written: {exc}", file=sys.stderr)
            return CHECK_FAILED
        print(
            f"age-export: {report.format} -> {report.path} (+ {report.sidecar.name}); max logit difference "
            f"{report.max_abs_diff:.2g} over {report.chips} chips"
        )
        return 0

    return command.run("age-export", body, (AgeEstimationError, OSError))


if __name__ == "__main__":
    sys.exit(main())
