"""``age-align``: align every face image of a labelled dataset with dlib (``trainer.data.align`` does the work)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from core.errors import ConfigError
from trainer.cli import command
from trainer.data.align import run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line of ``age-align``; a bad value exits 2 with one line naming the flag."""
    p = command.parser("age-align", "Align the faces of a labelled image dataset with dlib.")
    p.add_argument("--images", type=Path, required=True, help="folder the input paths are relative to")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--csv", type=Path, help="input CSV with at least ID,Path,Age")
    src.add_argument("--utkface", action="store_true", help="take ages and IDs from UTKFace file names")
    p.add_argument("--out", type=Path, required=True, help="output folder (never inside --images)")
    p.add_argument("--img-size", type=int, default=128, help="chip side in pixels (default 128)")
    p.add_argument("--padding", type=float, default=0.4, help="dlib chip padding (default 0.4)")
    p.add_argument("--start-label", type=int, help="smallest age kept (default: the smallest age in the data)")
    p.add_argument("--end-label", type=int, help="largest age kept (default: no limit)")
    p.add_argument("--detector", choices=("hog", "cnn"), default="hog", help="dlib face detector (default hog)")
    p.add_argument("--upsample", type=int, default=0, help="detector upsampling steps (default 0)")
    p.add_argument("--max-detect-side", type=int, default=1024, help="longest side searched (default 1024)")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes (default: cores)")
    args = p.parse_args(argv)
    for name, low in (("img_size", 16), ("upsample", 0), ("max_detect_side", 80), ("workers", 1)):
        if getattr(args, name) < low:
            p.error(f"--{name.replace('_', '-')} must be at least {low}, got {getattr(args, name)}")
    if args.padding < 0:
        p.error(f"--padding must be >= 0, got {args.padding}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Console entry point; bad input prints one line on stderr and returns 2; the last stdout line sums up."""
    args = parse_args(argv)

    def body() -> int:
        summary = run(args)
        reasons = ", ".join(f"{k} {v}" for k, v in summary["failed"].items()) or "none"
        rate = summary["images_this_run"] / max(summary["seconds_this_run"], 1e-9)
        print(
            f"aligned {summary['aligned']}, failed {sum(summary['failed'].values())} ({reasons}); "
            f"{summary['images_this_run']} images aligned in this run at {rate:.1f} images/s; "
            f"labels in {args.out / 'labels.csv'}"
        )
        return 0

    return command.run("age-align", body, (ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
