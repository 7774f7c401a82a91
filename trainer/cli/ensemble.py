"""``age-ensemble --models A.h5 B.h5 [...] --out OUT.h5``: several trained models -> one self-describing ``.h5``.

The work is ``trainer.model.ensemble``; see there for why the mean of logits keeps CORAL's rank consistency.
"""

from __future__ import annotations

import sys
from pathlib import Path

from trainer.cli import command
from trainer.model import ensemble


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-ensemble``; exit code 2 on a bad argument, file or mismatched members."""
    parser = command.parser("age-ensemble", __doc__)
    parser.add_argument("--models", required=True, nargs="+", type=Path, help="two or more .h5 files from age-train")
    parser.add_argument("--out", required=True, type=Path, help="the ensemble .h5 to write (atomically)")
    parser.add_argument("--csv", type=Path, help="optional: aligned chips to score it on (Path, Age)")
    parser.add_argument("--images", type=Path, help="folder the --csv paths are relative to")
    parser.add_argument(
        "--calibrate-csv", type=Path, help="aligned chips (under --images) to calibrate intervals on; default: --csv"
    )
    parser.add_argument(
        "--drop-flip",
        action="store_true",
        help="use each member without its mirror-image averaging: half the forward passes per face",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        path, meta, scores = ensemble.make_ensemble(
            args.models, args.out, args.csv, args.images, args.drop_flip, args.calibrate_csv
        )
        resized = [f"{m['file']} ({m['img_size']} px)" for m in meta["members"] if m["img_size"] != meta["img_size"]]
        if resized:
            print(f"chips: {meta['img_size']} px, resized in the model for {', '.join(resized)}")
        if scores is not None:
            print(f"ensemble: MAE {scores['mae']} RMSE {scores['rmse']} CS@5 {scores['cs5']} (n {scores['n']})")
        if "calibration" in meta:
            print(f"calibrated on {meta['calibration']['source']} ({meta['calibration']['n']} faces)")
        print(f"saved: {path}")
        return 0

    return command.run("age-ensemble", body)


if __name__ == "__main__":
    sys.exit(main())
