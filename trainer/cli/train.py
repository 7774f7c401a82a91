"""``age-train --config FILE [--set KEY=VALUE ...]``: the batch training job, config to self-describing ``.h5``.

Exit code 2 on any problem with the config or the CSV, before any work, and before TensorFlow is even imported
for a bad config: a typo costs a fraction of a second and prints nothing but the error. The last line printed is
``saved: PATH``. The job's steps are in ``trainer.training.job``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from core.errors import ConfigError
from trainer.cli import command
from trainer.training.config import load_config, parse_overrides
from trainer.training.job import run_job


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``age-train``; exit code 2 on a bad config or dataset."""
    parser = command.parser("age-train", __doc__)
    parser.add_argument("--config", required=True, type=Path, help="training config JSON (configs/*.json)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key; VALUE is JSON (else a string); relative paths resolve against the cwd",
    )
    args = parser.parse_args(argv)

    def body() -> int:
        config = load_config(args.config, parse_overrides(args.set))
        path = run_job(config)
        print(f"saved: {path}" if path else "saved: (written by the chief worker)")
        return 0

    return command.run("age-train", body, (ConfigError,))


if __name__ == "__main__":
    sys.exit(main())
