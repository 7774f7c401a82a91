"""``age-calibrate --model M.h5 --csv C --images D [--aligned] [--out NEW.h5]``: recalibrate a model's intervals.

The work is ``trainer.evaluation.calibrate``; see there for what it fits and how the file is rewritten.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.cli import command
from trainer.evaluation import calibrate


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-calibrate``; exit code 2 on a bad argument, file or model."""
    parser = command.parser("age-calibrate", __doc__)
    command.add_labelled_photos(parser, "the .h5 to calibrate")
    parser.add_argument("--out", type=Path, help="write the calibrated model here instead of updating --model")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    args = parser.parse_args(argv)

    def body() -> int:
        path, summary = calibrate.calibrate_model(
            args.model, args.csv, args.images, args.aligned, args.out, args.batch_size
        )
        print(json.dumps(summary))
        print(f"saved: {path}")
        return 0

    return command.run("age-calibrate", body)


if __name__ == "__main__":
    sys.exit(main())
