"""``age-robustness --model FILE.h5 --csv FILE --images DIR``: how a model holds up on degraded copies of its chips.

The work is ``trainer.evaluation.robustness``; see there for the copies and what the JSON holds.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from trainer.cli import command
from trainer.evaluation import robustness


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-robustness``; exit code 2 on a bad model, CSV or folder."""
    parser = command.parser("age-robustness", __doc__)
    parser.add_argument("--model", required=True, type=Path, help="a .h5 saved by age-train or age-ensemble")
    parser.add_argument("--csv", required=True, type=Path, help="CSV of aligned chips with Path,Age")
    parser.add_argument("--images", required=True, type=Path, help="folder the CSV's paths are relative to")
    parser.add_argument("--batch-size", type=int, default=64, help="chips per forward pass (default 64)")
    parser.add_argument("--out", type=Path, help="also write the JSON to this file")
    args = parser.parse_args(argv)

    def body() -> int:
        text = json.dumps(robustness.robustness_scores(args.model, args.csv, args.images, args.batch_size), indent=2)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text + "\n")
        print(text)
        return 0

    return command.run("age-robustness", body)


if __name__ == "__main__":
    sys.exit(main())
