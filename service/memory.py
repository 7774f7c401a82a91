"""Giving memory back to the system after a burst (glibc malloc).

A burst of large uploads leaves the server's resident memory high long after it ends: each thread that allocates
gets its own malloc arena (up to 8 per core), and glibc raises its mmap threshold to the largest block freed (up to
32 MB), so multi-megabyte upload and pixel buffers end up inside arenas that are never returned. Three settings,
measured in bench/RESULTS.md (``bench_hardening``), fix it without a second allocator:

* ``MALLOC_ARENA_MAX`` arenas (default 2) through ``mallopt(M_ARENA_MAX)`` before the threads start;
* a fixed mmap threshold of 1 MiB (``M_MMAP_THRESHOLD``), which also stops glibc from raising it: every buffer of
  an upload or an image is its own mapping, unmapped when freed;
* ``malloc_trim(0)`` once the service has been idle (no request body in flight) for ``MEMORY_TRIM_S``, returning
  the free pages inside the arenas.

jemalloc would need ``LD_PRELOAD`` of a system library that ``make setup`` cannot install from PyPI; these need
nothing. On a C library without ``mallopt`` (musl, macOS) all of this is skipped.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import functools
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.admission import MemoryBudget

logger = logging.getLogger(__name__)

_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
MMAP_THRESHOLD_BYTES = 1024 * 1024


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # Cached: find_library runs ldconfig in a subprocess, and a decode worker trims after every photo.
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def configure_malloc(arena_max: int) -> bool:
    """Cap glibc's arenas at ``arena_max`` and fix the mmap threshold; True if applied. ``arena_max`` 0 leaves
    glibc's defaults alone (the A/B baseline of bench_hardening).

    Call before the process starts its threads: arenas already created stay.
    """
    libc = _libc()
    if libc is None or arena_max <= 0:
        return False
    libc.mallopt(_M_ARENA_MAX, arena_max)
    libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)
    return True


def trim() -> bool:
    """Return free heap pages to the system (``malloc_trim(0)``); True if any were."""
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


async def trim_when_idle(budget: MemoryBudget, interval_s: float) -> None:
    """Forever: every ``interval_s``, if requests were admitted to ``budget`` since the last trim and none is in
    flight now, trim (in a worker thread: it walks the heap)."""
    trimmed_at = budget.charges
    while True:
        await asyncio.sleep(interval_s)
        if budget.used == 0 and budget.charges != trimmed_at:
            trimmed_at = budget.charges
            await asyncio.to_thread(trim)
