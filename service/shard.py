"""Splitting a folder of photos between N workers (``age-demo --shard I/N``, a Kubernetes Indexed Job's pods).

A file belongs to shard ``int(sha256(name)) mod N``: each worker decides from the file name alone, without a shared
listing or coordinator, so the N shards together take every file exactly once (and write exactly the JSON files
one run would, since each output is named after its input), and adding photos never moves the others between
shards.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

INDEX_VARIABLE = "JOB_COMPLETION_INDEX"
"""Set by Kubernetes in every pod of an Indexed Job: the pod's index, 0 to completions - 1."""


def parse_shard(text: str, environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """``"I/N"`` -> ``(I, N)`` with ``0 <= I < N``; a bare ``"N"`` takes ``I`` from ``JOB_COMPLETION_INDEX``.

    Raises ``ValueError`` with a one-line reason for anything else.
    """
    index_text, slash, count_text = text.partition("/")
    if not slash:
        count_text, index_text = index_text, environ.get(INDEX_VARIABLE, "")
        if not index_text:
            raise ValueError(f"--shard {text}: give I/N, or set {INDEX_VARIABLE} (an Indexed Job does)")
    try:
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise ValueError(f"--shard {text}: expected I/N with whole numbers, e.g. 0/4") from None
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"--shard {text}: need 0 <= I < N (got I={index}, N={count})")
    return index, count


def shard_of(name: str, count: int) -> int:
    """The shard ``0..count-1`` of a file name (stable across machines, Python versions and runs)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % count


def select(files: Sequence[Path], index: int, count: int) -> list[Path]:
    """The files of shard ``index`` of ``count``, in their given order."""
    return [path for path in files if shard_of(path.name, count) == index]
