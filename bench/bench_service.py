"""Service throughput and latency at 1, 4, 8 and 16 concurrent clients against age-demo's in-process rate.

The same UTKFace photos go through ``age-demo``'s loop (``service.demo.predict_folder``, no HTTP) and through a
real ``age-serve`` process on localhost (uvicorn, httpx async clients, one request per photo per level), in
``--rounds`` rounds of paired runs so that a change in the machine's load hits both sides of each ratio. Also
measured: the time from starting ``age-serve`` to its first healthy ``GET /health``. The model is ``--model``, else
``models/default.h5`` (or another ``models/*.h5``), else a throwaway untrained ResNet-18 built here (speed only).

Writes ``bench/results/service.md``; run as ``python -m bench.bench_service``. Needs ``../shared/data/utkface``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pandas as pd
import psutil

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "utkface"
RESULT = ROOT / "bench" / "results" / "service.md"
LEVELS = (1, 4, 8, 16)
TARGET = 0.85


def pick_model(requested: Path | None, workdir: Path) -> tuple[Path, str]:
    """The model to benchmark and how to describe it."""
    if requested is not None:
        return requested, f"`{requested}`"
    shipped = sorted((ROOT / "models").glob("*.h5"), key=lambda path: path.name != "default.h5")
    if shipped:
        return shipped[0], f"`models/{shipped[0].name}`"
    from core.artifact import save_model
    from trainer.model import build_model

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
    save_model(build_model("resnet", 18, 64, 90, width=48), path, metadata)
    return path, "a throwaway untrained ResNet-18 (width 48, 64 px; no model in models/), for speed only"


def write_config(model: Path, workdir: Path) -> Path:
    """A predict config that agrees with ``model``'s metadata."""
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


def sample_images(count: int) -> list[Path]:
    labels = pd.read_csv(DATA / "labels.csv")
    return [DATA / path for path in labels.sample(n=count, random_state=0)["Path"]]


def demo_runner(files: list[Path], config: Path, workdir: Path) -> Callable[[], tuple[float, float, int]]:
    """Load age-demo's predictor and aligner once; the returned call times one pass of its loop over ``files``.

    Each call returns photos per second (model load excluded), CPU seconds per photo and how many had a face.
    """
    from service.alignment import aligner_from_metadata
    from service.demo import predict_folder
    from service.predictor import load_predictor
    from service.settings import choose_model, load_settings

    settings = load_settings(predict_config=config)
    choice = choose_model(settings)
    predictor = load_predictor(choice)
    aligner = aligner_from_metadata(choice.metadata)
    out = workdir / "demo"
    out.mkdir()
    predict_folder(files[:16], out, predictor, aligner, settings, 32, progress=False)

    def run() -> tuple[float, float, int]:
        cpu, started = _cpu_seconds(psutil.Process()), time.perf_counter()
        summary = predict_folder(files, out, predictor, aligner, settings, 32, progress=False)
        wall = time.perf_counter() - started
        return len(files) / wall, (_cpu_seconds(psutil.Process()) - cpu) / len(files), summary.processed

    return run


def _cpu_seconds(process: psutil.Process) -> float:
    """User + system CPU time of ``process`` and its threads: unlike wall time, barely moved by other jobs."""
    times = process.cpu_times()
    return float(times.user + times.system)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(config: Path) -> tuple[subprocess.Popen[bytes], str, float]:
    """Start ``age-serve``; return it, its URL and the seconds until ``/health`` answered 200."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "service.main", "--config", str(config), "--port", str(port)]
    started = time.perf_counter()
    server = subprocess.Popen([*command, "--log-level", "warning"], cwd=ROOT, env=env)
    while time.perf_counter() - started < 300:
        if server.poll() is not None:
            raise RuntimeError(f"age-serve exited with status {server.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return server, url, time.perf_counter() - started
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.kill()
    raise RuntimeError("age-serve did not become healthy in 300 s")


async def _load(url: str, photos: list[tuple[str, bytes]], clients: int) -> tuple[float, list[float], int]:
    """Send every photo once from ``clients`` concurrent clients; photos/s, latencies (s) and 200s."""
    latencies: list[float] = []
    answered = 0
    cursor = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def worker() -> None:
            nonlocal cursor, answered
            while cursor < len(photos):
                name, data = photos[cursor]
                cursor += 1
                sent = time.perf_counter()
                response = await client.post("/predict", files={"file": (name, data, "image/jpeg")})
                latencies.append(time.perf_counter() - sent)
                answered += response.status_code == 200

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        wall = time.perf_counter() - started
    return len(photos) / wall, latencies, answered


def _batch_totals(url: str) -> tuple[float, float]:
    text = httpx.get(f"{url}/metrics").text

    def value(name: str) -> float:
        match = re.search(rf"^{name} (\S+)$", text, flags=re.MULTILINE)
        return float(match.group(1)) if match else 0.0

    return value("age_model_batch_size_sum"), value("age_model_batch_size_count")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: models/default.h5 if present)")
    parser.add_argument("--images", type=int, default=200, help="UTKFace photos, sent once per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="paired (age-demo, service) runs per level")
    args = parser.parse_args(argv)
    if not (DATA / "labels.csv").is_file():
        print(f"bench_service: needs {DATA}/labels.csv", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    files = sample_images(args.images)
    photos = [(path.name, path.read_bytes()) for path in files]
    demo_rates: list[float] = []
    rates: dict[int, list[float]] = {clients: [] for clients in LEVELS}
    ratios: dict[int, list[float]] = {clients: [] for clients in LEVELS}
    latencies: dict[int, list[float]] = {clients: [] for clients in LEVELS}
    answered: dict[int, int] = dict.fromkeys(LEVELS, 0)
    batches: dict[int, list[float]] = {clients: [0.0, 0.0] for clients in LEVELS}
    demo_cpu: list[float] = []
    server_cpu: dict[int, list[float]] = {clients: [] for clients in LEVELS}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        model, described = pick_model(args.model, workdir)
        config = write_config(model, workdir)
        run_demo = demo_runner(files, config, workdir)
        server, url, to_healthy = start_server(config)
        serving = psutil.Process(server.pid)
        try:
            asyncio.run(_load(url, photos[:32], 8))
            # Each service run is paired with an age-demo run just before it, so that the other jobs sharing this
            # machine slow both sides of a ratio alike; the median over rounds drops the odd disturbed pair.
            for _ in range(args.rounds):
                for clients in LEVELS:
                    demo, cpu_per_photo, demo_answered = run_demo()
                    demo_cpu.append(cpu_per_photo)
                    before, cpu = _batch_totals(url), _cpu_seconds(serving)
                    rate, seconds, ok = asyncio.run(_load(url, photos, clients))
                    server_cpu[clients].append((_cpu_seconds(serving) - cpu) / len(photos))
                    after = _batch_totals(url)
                    demo_rates.append(demo)
                    rates[clients].append(rate)
                    ratios[clients].append(rate / demo)
                    latencies[clients] += seconds
                    answered[clients] += ok
                    batches[clients][0] += after[0] - before[0]
                    batches[clients][1] += after[1] - before[1]
                    print(f"bench_service: {clients} clients {rate:.1f}/s, age-demo {demo:.1f}/s", flush=True)
        finally:
            server.terminate()
            server.wait(timeout=60)
    ratio = statistics.median(ratios[8])
    lines = [
        "## service",
        f"- Model: {described}. {args.images} UTKFace photos (200x200), each sent once per level and round as "
        f"`POST /predict` to a real `age-serve` on localhost (httpx async clients on the same machine); "
        f"detection threads = cores ({os.cpu_count()}), batches of at most 32 faces or 5 ms.",
        f"- Baseline, `age-demo`'s in-process loop on the same photos, run just before each service run: median "
        f"**{statistics.median(demo_rates):.1f} photos/s** (range {min(demo_rates):.1f}-{max(demo_rates):.1f} over "
        f"{len(demo_rates)} runs; {demo_answered} photos with a face), "
        f"{statistics.median(demo_cpu) * 1000:.1f} ms of CPU per photo. Load average at the start: "
        f"{load_at_start:.1f} (other jobs share this machine: wall-clock rates vary, CPU time per photo hardly).",
        f"- Time from starting `age-serve` to a healthy `/health`: **{to_healthy:.1f} s**.",
        "",
        "| clients | photos/s (median) | vs age-demo (median of paired runs) | p50 latency | p99 latency "
        "| mean faces per model call | server CPU per photo | answered 200 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients in LEVELS:
        cuts = statistics.quantiles(latencies[clients], n=100, method="inclusive")
        lines.append(
            f"| {clients} | {statistics.median(rates[clients]):.1f} | {statistics.median(ratios[clients]):.2f}x "
            f"| {cuts[49] * 1000:.0f} ms | {cuts[98] * 1000:.0f} ms "
            f"| {batches[clients][0] / max(batches[clients][1], 1):.1f} "
            f"| {statistics.median(server_cpu[clients]) * 1000:.1f} ms | {answered[clients]} |"
        )
    verdict = "meets" if ratio >= TARGET else "misses"
    lines += [
        "",
        f"At 8 clients the service runs at **{ratio:.2f}x** age-demo's rate (median of {args.rounds} paired runs): "
        f"{verdict} the target {TARGET}x. By CPU time per photo (age-demo's / the server's, which excludes the "
        f"HTTP clients) the service's efficiency at 8 clients is "
        f"{statistics.median(demo_cpu) / statistics.median(server_cpu[8]):.2f}x age-demo's.",
    ]
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
