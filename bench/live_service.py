"""A real ``age-serve`` process for benchmarks: the model to serve, a matching predict config, start-up and load.

Used by ``bench_service``; not a benchmark itself (``bench/run.py`` only runs ``bench_*.py``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


def pick_model(requested: Path | None, workdir: Path) -> tuple[Path, str]:
    """The model to benchmark and how to describe it: ``requested``, else ``models/default.h5`` (or another
    ``models/*.h5``), else a throwaway untrained ResNet-18 built in ``workdir`` (good for speed figures only)."""
    if requested is not None:
        return requested, f"`{requested}`"
    shipped = sorted((ROOT / "models").glob("*.h5"), key=lambda path: path.name != "default.h5")
    if shipped:
        return shipped[0], f"`models/{shipped[0].name}`"
    from core.artifact import save_model
    from trainer.model.build import build_model

    path = workdir / "throwaway.h5"
    metadata = {
        "start_label": 1,
        "num_classes": 90,
        "end_label": 90,
        "img_size": 64,
        "chip_padding": 0.25,
        "threshold": 0.5,
        "arch_type": "resnet",
        "arch_subtype": 18,
    }
    save_model(build_model("resnet", 18, 64, 90, width=32), path, metadata)
    return path, "a throwaway untrained ResNet-18 (width 32, 64 px; no model in models/), for speed only"


def write_config(model: Path, workdir: Path) -> Path:
    """A predict config in ``workdir`` that agrees with ``model``'s metadata."""
    from core.artifact import read_metadata

    meta = read_metadata(model)
    start, classes = int(meta["start_label"]), int(meta["num_classes"])
    config = {
        "n_classes": classes,
        "start_label": start,
        "end_label": start + classes - 1,
        "img_size": int(meta["img_size"]),
        "threshold": float(meta["threshold"]),
        "model_path": str(model.resolve()),
    }
    path = workdir / "predict_config.json"
    path.write_text(json.dumps(config))
    return path


def cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of ``process`` and its threads: unlike wall time, barely moved by other jobs."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    """A running ``age-serve``: its process, URL and the seconds it took to answer ``/health`` with 200."""

    process: subprocess.Popen[bytes]
    url: str
    seconds_to_healthy: float

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def rss_mib(self) -> float:
        """Resident memory of the server process, MiB."""
        return self.ps.memory_info().rss / 2**20

    def tree_rss_mib(self) -> float:
        """Resident memory of the server and its children (the decode workers), MiB."""
        processes = [self.ps, *self.ps.children(recursive=True)]
        total = 0
        for process in processes:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                continue
        return total / 2**20

    def tree_cpu_seconds(self) -> float:
        """User + system CPU seconds of the server and its live children (killed children's time is lost)."""
        total = 0.0
        for process in [self.ps, *self.ps.children(recursive=True)]:
            try:
                total += cpu_seconds(process)
            except psutil.NoSuchProcess:
                continue
        return total

    def batch_totals(self) -> tuple[float, float]:
        """Faces sent to the model so far and the number of model calls (from ``/metrics``)."""
        text = httpx.get(f"{self.url}/metrics").text

        def value(name: str) -> float:
            match = re.search(rf"^{name} (\S+)$", text, flags=re.MULTILINE)
            return float(match.group(1)) if match else 0.0

        return value("age_model_batch_size_sum"), value("age_model_batch_size_count")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


def start_server(config: Path, log: Path | None = None, **environment: str) -> Server:
    """Start ``age-serve`` on a free localhost port with extra ``environment`` (e.g. ``DETECT_WORKERS="1"``);
    its standard error goes to ``log`` when given."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **environment}
    command = [sys.executable, "-m", "service.main", "--config", str(config), "--port", str(port)]
    started = time.perf_counter()
    stderr = log.open("w") if log is not None else None
    process = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT, env=env, stderr=stderr)
    while time.perf_counter() - started < 300:
        if process.poll() is not None:
            raise RuntimeError(f"age-serve exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return Server(process, url, time.perf_counter() - started)
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    process.kill()
    raise RuntimeError("age-serve did not become healthy in 300 s")


@dataclass
class Load:
    """One pass of photos through the service: photos per second, per-request latencies (s), count per status."""

    rate: float
    latencies: list[float]
    statuses: collections.Counter[int]

    @property
    def answered(self) -> int:
        """Requests answered 200."""
        return self.statuses[200]

    @property
    def server_errors(self) -> int:
        """Requests answered 5xx."""
        return sum(count for status, count in self.statuses.items() if status >= 500)


async def _send_all(url: str, photos: list[tuple[str, bytes]], clients: int) -> Load:
    latencies: list[float] = []
    statuses: collections.Counter[int] = collections.Counter()
    cursor = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal cursor
            while cursor < len(photos):
                name, data = photos[cursor]
                cursor += 1
                sent = time.perf_counter()
                response = await client.post("/predict", files={"file": (name, data, "image/jpeg")})
                latencies.append(time.perf_counter() - sent)
                statuses[response.status_code] += 1

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return Load(len(photos) / wall, latencies, statuses)


def send_all(url: str, photos: list[tuple[str, bytes]], clients: int) -> Load:
    """Send every photo once as ``POST /predict`` from ``clients`` concurrent keep-alive clients."""
    return asyncio.run(_send_all(url, photos, clients))
