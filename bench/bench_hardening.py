"""Hardening figures for a real ``age-serve`` on 127.0.0.1 (issue 14): degenerate photos, idle and slow clients,
SIGTERM during a slow upload, and peak memory per concurrent huge photo.

1. A corpus of one-pixel-high, one-pixel-wide and extreme-aspect PNGs: count of 5xx answers (target 0).
2. 2,000 idle connections and 50 slow clients (one header byte a second) held open while ``GET /health`` is polled:
   its worst latency (target under 1 s) and how long until the server has closed every idle one (target 30 s).
3. SIGTERM with a slow upload in flight: seconds until the process exits (target 15 s).
4. Four concurrent 7000x7000 16-bit TIFFs: peak RSS over the level after warm-up (target 0.8 GB), sampled
   every 20 ms, so the true peak may sit a little higher.

Writes ``bench/results/hardening.md``; run as ``python -m bench.bench_hardening [--model FILE.h5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import signal
import socket
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.live_service import pick_model, start_server, write_config
from bench.run import write_section

SHAPES = [(1, w) for w in (2, 1025, 2048, 4097, 65535)] + [(h, 1) for h in (2, 2048, 65535)] + [(2, 9000), (3, 20000)]


def _png(height: int, width: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _tiff16(side: int, seed: int) -> bytes:
    wide = np.random.default_rng(seed).integers(0, 65536, (side, side), dtype=np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(wide).save(buffer, format="TIFF", compression="tiff_deflate")
    return buffer.getvalue()


def degenerate(url: str) -> tuple[int, int]:
    statuses = [
        httpx.post(f"{url}/predict", files={"file": ("a.png", _png(*s))}, timeout=60).status_code for s in SHAPES
    ]
    return len(statuses), sum(status >= 500 for status in statuses)


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    return sock


def idle_and_slow(url: str, port: int) -> tuple[float, float, int]:
    idle = [_connect(port) for _ in range(2000)]
    slow = [_connect(port) for _ in range(50)]
    stop = threading.Event()

    def dribble() -> None:
        head = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        for i in range(len(head)):
            if stop.is_set():
                return
            for sock in slow:
                with contextlib.suppress(OSError):
                    sock.send(head[i : i + 1])
            time.sleep(1)

    threading.Thread(target=dribble, daemon=True).start()
    started, worst = time.monotonic(), 0.0
    closed_after = float("nan")
    while time.monotonic() - started < 45:
        t0 = time.perf_counter()
        httpx.get(f"{url}/health", timeout=10).raise_for_status()
        worst = max(worst, time.perf_counter() - t0)
        still_open = 0
        for sock in idle:
            try:
                if sock.recv(1) == b"":
                    continue
            except BlockingIOError:
                still_open += 1
                continue
            except OSError:
                continue
        if still_open == 0:
            closed_after = time.monotonic() - started
            break
        time.sleep(0.25)
    stop.set()
    for sock in idle + slow:
        sock.close()
    return worst, closed_after, len(idle)


def sigterm_during_upload(config: Path) -> float:
    server = start_server(config)
    port = int(server.url.rsplit(":", 1)[1])
    sock = socket.create_connection(("127.0.0.1", port))
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    sock.sendall(head + b"Content-Length: 1000000\r\n\r\n--b\r\n")
    time.sleep(0.5)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    server.process.wait(timeout=120)
    sock.close()
    return time.monotonic() - started


def huge_tiffs(config: Path) -> tuple[float, float, int]:
    photos = [_tiff16(7000, seed) for seed in range(4)]
    server = start_server(config, MAX_UPLOAD_BYTES=str(200 * 2**20))
    try:
        for _ in range(2):  # warm-up: one of the same photos, so allocator pools are counted as the base
            httpx.post(f"{server.url}/predict", files={"file": ("w.tif", photos[0])}, timeout=300)
        base = server.rss_mib()
        peak, done = base, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, server.rss_mib())
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        statuses: list[int] = []

        def post(photo: bytes) -> None:
            statuses.append(
                httpx.post(f"{server.url}/predict", files={"file": ("a.tif", photo)}, timeout=300).status_code
            )

        posts = [threading.Thread(target=post, args=(photo,)) for photo in photos]
        for thread in posts:
            thread.start()
        for thread in posts:
            thread.join()
        done.set()
        sampler.join()
        return base, peak, sum(status >= 500 for status in statuses)
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: models/default.h5)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        chosen, described = pick_model(args.model, Path(tmp))
        config = write_config(chosen, Path(tmp))
        server = start_server(config)
        try:
            sent, errors = degenerate(server.url)
            worst, closed_after, idle = idle_and_slow(server.url, int(server.url.rsplit(":", 1)[1]))
        finally:
            server.stop()
        exit_s = sigterm_during_upload(config)
        base, peak, tiff_errors = huge_tiffs(config)
    lines = [
        f"Model {described}; defaults (HEAD_TIMEOUT_S 10, BODY_TIMEOUT_S 60, MAX_CONNECTIONS 4096, "
        "SHUTDOWN_TIMEOUT_S 8, DECODE_SIDE 1536).",
        "",
        "| check | figure | target |",
        "| --- | --- | --- |",
        f"| one-pixel and extreme-aspect PNGs | {errors} 5xx of {sent} | 0 |",
        f"| worst `GET /health` with {idle} idle + 50 slow connections | {worst:.3f} s | < 1 s |",
        f"| all {idle} idle connections closed after | {closed_after:.1f} s | <= 30 s |",
        f"| SIGTERM with a slow upload in flight: exit after | {exit_s:.1f} s | <= 15 s |",
        f"| 4 concurrent 7000x7000 16-bit TIFFs: peak RSS over post-warm-up | {(peak - base) / 1024:.2f} GB "
        f"(base {base:.0f} MiB; {tiff_errors} 5xx) | <= 0.8 GB |",
    ]
    write_section("hardening", lines)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
