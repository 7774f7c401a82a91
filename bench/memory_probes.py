"""Memory and decode-cost probes of ``bench_hardening`` (issue 20): RSS around a burst of 12 MP photos, and the cost
of decoding in a worker process against decoding in the thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

from bench.live_service import Server

_JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
_OFF = {"MALLOC_ARENA_MAX": "0", "MEMORY_TRIM_S": "1000000"}
ALLOCATORS: dict[str, dict[str, str]] = {
    "tuned": {},
    "glibc defaults": _OFF,
    **({"jemalloc": {**_OFF, "LD_PRELOAD": str(_JEMALLOC)}} if _JEMALLOC.exists() else {}),
}
"""The server's environment per allocator variant (jemalloc only where Debian's libjemalloc2 is installed)."""


def burst_memory(
    server: Server, photo: bytes, clients: int, seconds: float, settle_s: float = 60.0
) -> dict[str, float]:
    """Warm baseline, peak and settled RSS of the server process around ``clients`` posting ``photo`` for
    ``seconds``; ``back_s`` is when RSS first fell within 1.3x of the baseline after the load (nan if never)."""
    for _ in range(3):
        httpx.post(f"{server.url}/predict", files={"file": ("p.jpg", photo)}, timeout=120)
    time.sleep(3)
    base, tree_base = server.rss_mib(), server.tree_rss_mib()
    statuses: Counter[int] = Counter()

    async def load() -> None:
        async with httpx.AsyncClient(timeout=300, limits=httpx.Limits(max_connections=clients)) as client:
            stop = time.monotonic() + seconds

            async def one() -> None:
                while time.monotonic() < stop:
                    response = await client.post(f"{server.url}/predict", files={"file": ("p.jpg", photo)})
                    statuses[response.status_code] += 1

            await asyncio.gather(*(one() for _ in range(clients)))

    peak = [base, tree_base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], server.rss_mib())
            peak[1] = max(peak[1], server.tree_rss_mib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    asyncio.run(load())
    done.set()
    sampler.join()
    ended, back_s = time.monotonic(), float("nan")
    while time.monotonic() - ended < settle_s:
        if server.rss_mib() <= 1.3 * base:
            back_s = time.monotonic() - ended
            break
        time.sleep(0.5)
    return {
        "base": base,
        "peak": peak[0],
        "after": server.rss_mib(),
        "tree_base": tree_base,
        "tree_peak": peak[1],
        "tree_after": server.tree_rss_mib(),
        "back_s": back_s,
        "ok": statuses[200],
        "sent": sum(statuses.values()),
    }


def decode_overhead(photo: bytes, rounds: int = 12) -> tuple[float, float]:
    """Median wall-time ratio (worker process / in-thread) of decoding ``photo`` reduced, interleaved A B A B,
    and the parent's CPU per process decode in ms."""
    from core.image import decode_reduced
    from service.decoding import DecodeWorkers

    workers = DecodeWorkers(1, 60.0)
    never = threading.Event()
    try:
        workers.decode(photo, 50_000_000, 1536, 100, never)
        ratios, parent_cpu = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            decode_reduced(photo, 50_000_000, 1536, 100)
            t1 = time.perf_counter()
            c1 = time.process_time()
            workers.decode(photo, 50_000_000, 1536, 100, never)
            parent_cpu.append(time.process_time() - c1)
            ratios.append((time.perf_counter() - t1) / (t1 - t0))
    finally:
        workers.close()
    return float(np.median(ratios)), float(np.median(parent_cpu)) * 1000
