"""Does face detection run in parallel threads? dlib's HOG detector, ``FaceAligner`` and the service's pool.

1. GIL probe: how fast a pure-Python counting thread runs during one long ``hog.run`` call (``bald_guys.jpg``
   at 2000x1500) against while the main thread sleeps. A detector that held the GIL would stop the counter.
2. ``FaceAligner.align`` on 100 UTKFace photos: 2 threads with an aligner each against 1 thread (paired runs);
   the speed-up, and CPU seconds per wall second (above 1 only when the threads really run at once).
3. ``age-serve`` at 8 clients with its default detection pool (one thread per core) against ``DETECT_WORKERS=1``.

Writes ``bench/results/threads.md``; run as ``python -m bench.bench_threads [--model FILE.h5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench.live_service import ROOT, pick_model, send_all, start_server, write_config
from bench.run import write_section
from core.face import FaceAligner
from core.image import read_image

DATA = ROOT.parent / "shared" / "data"


def counter_rate_during(call: Callable[[], object]) -> tuple[float, float]:
    """Seconds ``call`` took and how many increments per second a Python counting thread made meanwhile."""
    stop = threading.Event()
    count = [0]

    def spin() -> None:
        while not stop.is_set():
            count[0] += 1

    spinner = threading.Thread(target=spin)
    spinner.start()
    time.sleep(0.05)
    before, started = count[0], time.perf_counter()
    call()
    seconds = time.perf_counter() - started
    done = count[0]
    stop.set()
    spinner.join()
    return seconds, (done - before) / seconds


def gil_probe() -> tuple[float, float]:
    """Seconds of one ``hog.run`` on a 2000x1500 photo and the counter's share of its solo rate meanwhile."""
    import dlib

    photo = Image.open(DATA / "faces" / "bald_guys.jpg").convert("RGB").resize((2000, 1500))
    pixels = np.asarray(photo)
    detector = dlib.get_frontal_face_detector()

    def nap() -> None:
        deadline = time.perf_counter() + 0.5
        while time.perf_counter() < deadline:
            time.sleep(0.001)

    _, solo = counter_rate_during(nap)
    seconds, during = counter_rate_during(lambda: detector.run(pixels, 0, 0.0))
    return seconds, during / solo


def align_rate(images: list[np.ndarray], threads: int) -> tuple[float, float]:
    """Photos per second aligning ``images`` on ``threads`` threads (an aligner each), and CPU s per wall s."""
    aligners = [FaceAligner(chip_size=64, padding=0.25) for _ in range(threads)]
    for aligner in aligners:
        aligner.align(images[0])

    def work(index: int) -> None:
        for image in images[index::threads]:
            aligners[index].align(image)

    workers = [threading.Thread(target=work, args=(index,)) for index in range(threads)]
    cpu, started = time.process_time(), time.perf_counter()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    wall = time.perf_counter() - started
    return len(images) / wall, (time.process_time() - cpu) / wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: models/default.h5 if present)")
    parser.add_argument("--rounds", type=int, default=3, help="paired runs per comparison")
    args = parser.parse_args(argv)
    if not (DATA / "utkface" / "labels.csv").is_file() or not (DATA / "faces" / "bald_guys.jpg").is_file():
        print(f"bench_threads: needs {DATA}/utkface and {DATA}/faces/bald_guys.jpg", file=sys.stderr)
        return 1
    load_at_start = os.getloadavg()[0]
    labels = pd.read_csv(DATA / "utkface" / "labels.csv").sample(n=200, random_state=1)
    paths = [DATA / "utkface" / path for path in labels["Path"]]
    images = [read_image(path) for path in paths[:100]]
    photos = [(path.name, path.read_bytes()) for path in paths]

    probe_seconds, kept = gil_probe()
    one: list[float] = []
    two: list[float] = []
    busy: list[float] = []
    for _ in range(args.rounds):
        one.append(align_rate(images, 1)[0])
        rate, cpu_per_wall = align_rate(images, 2)
        two.append(rate)
        busy.append(cpu_per_wall)
    served: dict[str, list[float]] = {"default": [], "one": []}
    with tempfile.TemporaryDirectory() as tmp:
        model, described = pick_model(args.model, Path(tmp))
        config = write_config(model, Path(tmp))
        pool, single = start_server(config), start_server(config, DETECT_WORKERS="1")
        try:
            for server in (pool, single):
                send_all(server.url, photos[:32], 8)
            for _ in range(args.rounds):
                served["default"].append(send_all(pool.url, photos, 8).rate)
                served["one"].append(send_all(single.url, photos, 8).rate)
        finally:
            pool.stop()
            single.stop()

    align_gain = statistics.median([b / a for a, b in zip(one, two, strict=True)])
    serve_gain = statistics.median([b / a for a, b in zip(served["one"], served["default"], strict=True)])
    lines = [
        "## threads",
        f"Load average at the start: {load_at_start:.1f} on {os.cpu_count()} cores (other jobs on the cores cap any "
        "thread speed-up; the GIL probe does not depend on them).",
        "",
        f"- GIL probe: during one {probe_seconds * 1000:.0f} ms `hog.run` call (`bald_guys.jpg` at 2000x1500) a "
        f"Python counting thread ran at **{kept * 100:.0f}%** of its solo rate (0% if the detector held the GIL): "
        f"dlib's HOG detector {'releases' if kept > 0.1 else 'holds'} the GIL.",
        f"- `FaceAligner.align` on 100 UTKFace photos: 2 threads with an aligner each "
        f"{statistics.median(two):.0f} photos/s vs 1 thread {statistics.median(one):.0f}: **{align_gain:.2f}x** "
        f"(median of {args.rounds} paired runs); the 2 threads used {statistics.median(busy):.2f} CPU seconds per "
        "wall second.",
        f"- `age-serve` ({described}) at 8 clients on 200 UTKFace photos: detection pool of {os.cpu_count()} "
        f"threads (default) {statistics.median(served['default']):.1f} photos/s vs `DETECT_WORKERS=1` "
        f"{statistics.median(served['one']):.1f}: **{serve_gain:.2f}x** (median of {args.rounds} paired runs).",
    ]
    write_section("threads", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
