"""What every trainer command shares: a parser that reports a bad command line in one line, and one place that
turns the project's errors into ``PROG: error: MESSAGE`` on stderr with exit code 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from core.errors import AgeEstimationError

USAGE_ERROR = 2


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(USAGE_ERROR, f"{self.prog}: error: {message}\n")


def parser(prog: str, doc: str | None) -> Parser:
    """A parser for ``prog`` described by the first paragraph of ``doc`` (a module docstring)."""
    return Parser(prog=prog, description=(doc or "").split("\n\n")[0])


def add_labelled_photos(parser: argparse.ArgumentParser, model_help: str) -> None:
    """``--model``, ``--csv`` (``Path,Age``), ``--images`` and ``--aligned``: what the scoring commands read."""
    parser.add_argument("--model", required=True, type=Path, help=model_help)
    parser.add_argument("--csv", required=True, type=Path, help="CSV with Path,Age (Path relative to --images)")
    parser.add_argument("--images", required=True, type=Path, help="folder the CSV's paths are relative to")
    parser.add_argument("--aligned", action="store_true", help="images are aligned chips: resize, do not detect")


def run(
    prog: str,
    body: Callable[[], int],
    errors: tuple[type[BaseException], ...] = (AgeEstimationError,),
) -> int:
    """``body()``'s exit code, or 2 after printing ``PROG: error: MESSAGE`` when it raises one of ``errors``."""
    try:
        return body()
    except errors as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
