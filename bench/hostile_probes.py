"""Issue 20's probes against a live ``age-serve``: each returns figures for ``bench_hardening``'s table.

Bodies of hundreds of megabytes are streamed from one buffer over a raw socket (never built whole in the client),
and the client stops sending as soon as the server answers, as a real client would on an early 413 or 503.
"""

from __future__ import annotations

import io
import select
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from bench.live_service import Server
from tests.hostile import MUTANTS, gif_header, mutated, scan_bomb, tga_header


def photo_12mp(seed: int = 0) -> bytes:
    """A 4000x3000 JPEG of the astronaut's face beside gradients and noise, about 3.5 MB: a phone photo's size and
    decoding cost, with a face to find."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:3000, 0:4000]
    pixels = np.stack([(x / 16) % 256, (y / 12) % 256, ((x + y) / 20) % 256], -1).astype(np.uint8)
    pixels += rng.integers(0, 20, pixels.shape, dtype=np.uint8)
    face = Image.open(Path(__file__).resolve().parents[1] / "tests/fixtures/astronaut.png").convert("RGB")
    pixels[:2048, :2048] = np.asarray(face.resize((2048, 2048), Image.Resampling.BILINEAR))
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def face_photo() -> bytes:
    buffer = io.BytesIO()
    Image.open(Path(__file__).resolve().parents[1] / "tests/fixtures/astronaut.png").convert("RGB").save(buffer, "JPEG")
    return buffer.getvalue()


def _port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def stream_request(port: int, head: bytes, pieces: Iterator[bytes]) -> int:
    """Send ``head`` then ``pieces`` until the server answers; the status (0 if the connection was dropped)."""
    with socket.create_connection(("127.0.0.1", port), timeout=300) as sock:
        answer = b""
        try:
            sock.sendall(head)
            for piece in pieces:
                if select.select([sock], [], [], 0)[0]:
                    break  # an early answer: stop sending, as a client would
                sock.sendall(piece)
        except OSError:
            pass
        try:
            answer = sock.recv(65536)
        except OSError:
            return 0
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else 0


class Sampler:
    """Samples the server's tree RSS every 20 ms (and, optionally, ``GET /health/live`` latency) in threads."""

    def __init__(self, server: Server, probe_live: bool = False) -> None:
        self.server, self.peak, self.worst_live = server, 0.0, 0.0
        self._done = threading.Event()
        self._threads = [threading.Thread(target=self._rss)]
        if probe_live:
            self._threads.append(threading.Thread(target=self._live))

    def _rss(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.server.tree_rss_mib())
            time.sleep(0.02)

    def _live(self) -> None:
        while not self._done.is_set():
            started = time.perf_counter()
            httpx.get(f"{self.server.url}/health/live", timeout=30)
            self.worst_live = max(self.worst_live, time.perf_counter() - started)
            time.sleep(0.1)

    def __enter__(self) -> Sampler:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join()


@dataclass
class BombFigures:
    normal_s: float
    bomb_statuses: list[int]
    bomb_s: float
    cpu_after_s: float


def scan_bombs(server: Server, bomb: bytes) -> BombFigures:
    """Two scan bombs in flight, then a normal photo; CPU of the server tree over 5 s starting 3 s after."""
    statuses: list[int] = []
    done: list[float] = []
    started = time.perf_counter()

    def post() -> None:
        response = httpx.post(f"{server.url}/predict", files={"file": ("b.jpg", bomb)}, timeout=120)
        statuses.append(response.status_code)
        done.append(time.perf_counter() - started)

    posts = [threading.Thread(target=post) for _ in range(2)]
    for thread in posts:
        thread.start()
    time.sleep(0.3)
    sent = time.perf_counter()
    httpx.post(f"{server.url}/predict", files={"file": ("a.jpg", face_photo())}, timeout=120)
    normal = time.perf_counter() - sent
    for thread in posts:
        thread.join()
    time.sleep(3)
    before = server.tree_cpu_seconds()
    time.sleep(5)
    return BombFigures(normal, statuses, max(done), server.tree_cpu_seconds() - before)


def corpus(server: Server) -> tuple[Counter[int], list[int]]:
    """Statuses of the hostile files and JSON bodies, and of the items of a batch with one bad file."""
    files = [gif_header(), tga_header(), scan_bomb(512, 8000), *(mutated(fmt, seed) for fmt, seed in MUTANTS)]
    statuses: Counter[int] = Counter()
    for data in files:
        statuses[httpx.post(f"{server.url}/predict", files={"file": ("x", data)}, timeout=60).status_code] += 1
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"image": ' + b"7" * 5000 + b"}"):
        json_headers = {"content-type": "application/json"}
        statuses[httpx.post(f"{server.url}/predict", content=body, headers=json_headers, timeout=60).status_code] += 1
    good = face_photo()
    batch = [("file", ("a.jpg", good)), ("file", ("t.tga", tga_header())), ("file", ("b.jpg", good))]
    answer = httpx.post(f"{server.url}/predict/batch", files=batch, timeout=120)
    items = [item.get("status", 200) for item in answer.json()["results"]] if answer.status_code == 200 else []
    return statuses, items


def json_flood(server: Server, megabytes: int = 150) -> tuple[int, float, float]:
    """A ``megabytes`` JSON batch of ``{}`` items: status, peak RSS over the level before (MiB), worst live (s)."""
    piece = b"{}," * (2**20 // 3)
    count = megabytes * 2**20 // len(piece)
    body_length = 12 + count * len(piece) + 4
    head = (
        b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n\r\n" % body_length
    )
    base = server.tree_rss_mib()
    with Sampler(server, probe_live=True) as sampler:
        pieces = iter([b'{"images": [', *(piece for _ in range(count)), b"{}]}"])
        status = stream_request(_port(server), head, pieces)
        time.sleep(1)
    return status, sampler.peak - base, sampler.worst_live


def multipart_batches(
    server: Server, clients: int = 16, parts: int = 32, part_mb: float = 9.9
) -> tuple[Counter[int], float, float]:
    """``clients`` concurrent batches of ``parts`` random parts: statuses, tree RSS before and its peak (MiB)."""
    payload = b"\xff\xd8\xff" + np.random.default_rng(1).integers(0, 256, int(part_mb * 2**20), np.uint8).tobytes()
    part_head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="p.jpg"\r\n\r\n'
    length = parts * (len(part_head) + len(payload) + 2) + len(b"--b--\r\n")
    head = (
        b"POST /predict/batch HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: %d\r\n\r\n" % length
    )

    def pieces() -> Iterator[bytes]:
        view = memoryview(payload)
        for _ in range(parts):
            yield part_head
            for start in range(0, len(payload), 2**20):
                yield bytes(view[start : start + 2**20])
            yield b"\r\n"
        yield b"--b--\r\n"

    statuses: Counter[int] = Counter()
    base = server.tree_rss_mib()
    with Sampler(server) as sampler:
        threads = [
            threading.Thread(target=lambda: statuses.update([stream_request(_port(server), head, pieces())]))
            for _ in range(clients)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return statuses, base, sampler.peak


def odd_requests(server: Server) -> dict[str, object]:
    """Odd methods, 10,000 headers, a slash redirect with a foreign Host, the docs assets."""
    port = _port(server)
    for i in range(300):
        stream_request(port, b"%s%d / HTTP/1.1\r\nHost: x\r\n\r\n" % (b"M" * 60_000, i), iter(()))
    metrics_kb = len(httpx.get(f"{server.url}/metrics").content) / 1024
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(10_000))
    many_headers = stream_request(port, b"GET /health HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n", iter(()))
    slash = httpx.get(f"{server.url}/health/", headers={"host": "evil.example"})
    docs = {name: httpx.get(f"{server.url}/docs-assets/{name}").status_code for name in ("index.html", "index.j2")}
    return {
        "metrics_kb": metrics_kb,
        "many_headers": many_headers,
        "slash": f"{slash.status_code} {slash.headers.get('location', 'no Location')}",
        "docs": docs,
    }


def sigterm_during_decode(server: Server, bomb: bytes) -> int:
    """SIGTERM while a slow decode runs (the scan cap off): the status the cut request gets."""
    result: list[int] = []
    poster = threading.Thread(
        target=lambda: result.append(
            httpx.post(f"{server.url}/predict", files={"file": ("b.jpg", bomb)}, timeout=120).status_code
        )
    )
    poster.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(
        child.cpu_times().user > 0.5 for child in server.ps.children(recursive=True)
    ):
        time.sleep(0.05)
    server.process.send_signal(signal.SIGTERM)
    poster.join()
    server.process.wait(timeout=60)
    return result[0] if result else 0
