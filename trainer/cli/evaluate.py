"""``age-evaluate --model FILE.h5 --csv FILE --images DIR [--aligned]``: one JSON object of the model's scores.

The work is ``trainer.evaluation.evaluate``; see there for what the JSON holds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.cli import command
from trainer.evaluation import evaluate as evaluation


def _coverage(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie in (0, 1) (got {text})")
    return value


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-evaluate``; exit code 2 on a bad argument, file or model."""
    parser = command.parser("age-evaluate", __doc__)
    command.add_labelled_photos(parser, "a .h5 saved by age-train")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument(
        "--plots", type=Path, help="also write metrics.json (with MAE per decade) and PNG plots to this folder"
    )
    parser.add_argument("--groups", default="", help="CSV columns to break the scores down by, e.g. Gender,Race")
    parser.add_argument("--coverage", type=_coverage, default=0.9, help="interval coverage to score (default 0.9)")
    args = parser.parse_args(argv)
    groups = [column.strip() for column in args.groups.split(",") if column.strip()]

    def body() -> int:
        result = evaluation.evaluate(
            args.model, args.csv, args.images, args.aligned, args.batch_size, args.plots, groups, args.coverage
        )
        print(json.dumps(result))
        return 0

    return command.run("age-evaluate", body)


if __name__ == "__main__":
    sys.exit(main())
