"""Where each millisecond of CPU goes per photo: in-process (``age-demo``'s pipeline) and through ``age-serve``.

In-process, every stage runs on its own, one photo at a time, on the same UTKFace photos (200x200) and timed with
the CPU clock of the calling thread (dlib, Pillow, pydantic) or of the whole process (the model, whose TensorFlow
threads are not the caller's): decode, HOG detection, landmarks + chips, the model at every batch size it meets,
response building (``Predictor.response``) and JSON (``model_dump_json``). ``age-demo``'s own loop
(``service.demo.predict_folder``, batches of 32) is measured as a whole beside them.

Through the service (a real ``age-serve``, httpx clients on the same machine, 1 and 8 clients), the server's CPU
per photo is split by thread: the event-loop thread (HTTP, multipart, response building, JSON, the batcher's
queueing) and the others (decoding and dlib in the detection pool, the model). The pipeline's share of each is the
in-process figure (the model's at the mean batch size the service reached); the rest is what serving adds: "HTTP"
on the event loop, "queueing and thread hand-offs" in the workers. Writes ``bench/results/profile.md`` and the raw
figures to ``bench/profile.json`` (kept in git); run as ``python -m bench.bench_profile``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import psutil

from bench.bench_service import DATA, demo_runner, sample_images
from bench.live_service import pick_model, send_all, start_server, write_config
from bench.run import BENCH, write_section

BATCHES = (1, 2, 4, 8, 16, 32)
STAGES = ("decode", "detection", "landmarks + chips", "model", "response building", "JSON")


def _per_call(clock: Callable[[], float], calls: int, work: Callable[..., Any], *args: Any) -> float:
    started = clock()
    for _ in range(calls):
        work(*args)
    return (clock() - started) / calls


def pipeline_stages(files: list[Path], config: Path) -> tuple[dict[str, float], dict[int, float]]:
    """CPU seconds per photo of each in-process stage, and the model's CPU seconds per face by batch size."""
    from core.image import decode_reduced
    from service.alignment import aligner_from_metadata
    from service.predictor import settings_loader
    from service.settings import choose_model, load_settings

    settings = load_settings(predict_config=config)
    choice = choose_model(settings)
    predictor = settings_loader(settings)(choice)
    aligner = aligner_from_metadata(choice.metadata, settings.max_faces)._local.aligner
    photos = [path.read_bytes() for path in files]
    spent = dict.fromkeys(STAGES, 0.0)
    found = 0
    for data in photos:
        rgb = decode_reduced(data, settings.max_pixels, settings.decode_side).rgb
        spent["decode"] += _per_call(
            time.thread_time, 3, decode_reduced, data, settings.max_pixels, settings.decode_side
        )
        search, _ = aligner._search_copy(rgb)
        detection = _per_call(time.thread_time, 3, aligner._detect, search)
        faces = aligner.align(rgb)
        whole = _per_call(time.thread_time, 3, aligner.align, rgb)
        spent["detection"] += detection
        if not faces:
            continue
        found += 1
        spent["landmarks + chips"] += max(0.0, whole - detection)
        boxes = [face.box for face in faces]
        logits = predictor.logits(np.stack([face.chip for face in faces]))
        body = predictor.response(boxes, logits)
        spent["response building"] += _per_call(time.thread_time, 20, predictor.response, boxes, logits)
        spent["JSON"] += _per_call(time.thread_time, 20, body.model_dump_json)
    per_photo = {stage: seconds / len(photos) for stage, seconds in spent.items()}
    for stage in ("landmarks + chips", "response building", "JSON"):
        per_photo[stage] = spent[stage] / max(found, 1)
    chip = np.random.default_rng(0).integers(0, 256, (32, predictor.img_size, predictor.img_size, 3), dtype=np.uint8)
    model: dict[int, float] = {}
    for size in BATCHES:
        predictor.logits(chip[:size])
        model[size] = _per_call(time.process_time, max(4, 64 // size), predictor.logits, chip[:size]) / size
    per_photo["model"] = model[32]
    return per_photo, model


def _nearest(model: dict[int, float], faces_per_call: float) -> float:
    sizes = sorted(model)
    below = max([s for s in sizes if s <= faces_per_call] or [sizes[0]])
    above = min([s for s in sizes if s >= faces_per_call] or [sizes[-1]])
    if above == below:
        return model[below]
    share = (faces_per_call - below) / (above - below)
    return model[below] * (1 - share) + model[above] * share


def _thread_cpu(process: psutil.Process) -> tuple[float, float]:
    """CPU seconds of the event-loop (main) thread and of all other threads."""
    threads = process.threads()
    main = sum(t.user_time + t.system_time for t in threads if t.id == process.pid)
    return main, sum(t.user_time + t.system_time for t in threads) - main


def service_stages(files: list[Path], config: Path, clients: int, rounds: int) -> dict[str, float]:
    """Server CPU seconds per photo at ``clients``: the event loop's, the other threads', mean faces per call."""
    photos = [(path.name, path.read_bytes()) for path in files]
    server = start_server(config)
    try:
        send_all(server.url, photos, clients)
        main = workers = total = 0.0
        faces = calls = 0.0
        for _ in range(rounds):
            before, batches = _thread_cpu(server.ps), server.batch_totals()
            cpu = server.tree_cpu_seconds()
            send_all(server.url, photos, clients)
            total += server.tree_cpu_seconds() - cpu
            after, batches_after = _thread_cpu(server.ps), server.batch_totals()
            main += after[0] - before[0]
            workers += after[1] - before[1]
            faces += batches_after[0] - batches[0]
            calls += batches_after[1] - batches[1]
    finally:
        server.stop()
    count = len(photos) * rounds
    return {
        "total": total / count,
        "event loop": main / count,
        "workers": workers / count,
        "faces per call": faces / max(calls, 1.0),
    }


def report(
    stages: dict[str, float],
    model: dict[int, float],
    demo_cpu: float,
    served: dict[int, dict[str, float]],
    described: str,
    photos: int,
) -> list[str]:
    ms = lambda seconds: f"{seconds * 1000:.2f}"  # noqa: E731
    lines = [
        "## profile",
        f"- Model: {described}; {photos} UTKFace photos (200x200). CPU milliseconds per photo by stage; load average "
        f"at the start {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "- The model alone, CPU ms per face by batch size: "
        + ", ".join(f"{size}: {ms(seconds)}" for size, seconds in model.items())
        + ".",
        "",
        "| stage | in-process (stages alone) | service, 1 client | service, 8 clients |",
        "| --- | ---: | ---: | ---: |",
    ]
    columns: dict[int, dict[str, float]] = {}
    for clients, figures in served.items():
        column = dict(stages)
        column["model"] = _nearest(model, figures["faces per call"])
        pipeline = sum(column[s] for s in ("decode", "detection", "landmarks + chips", "model"))
        column["queueing and thread hand-offs"] = figures["workers"] - pipeline
        column["HTTP (uvicorn, multipart, routing)"] = (
            figures["event loop"] - stages["response building"] - stages["JSON"]
        )
        column["total"] = figures["total"]
        columns[clients] = column
    in_process = {**stages, "total": sum(stages.values())}
    names = [*STAGES, "queueing and thread hand-offs", "HTTP (uvicorn, multipart, routing)", "total"]
    for name in names:
        cells = [ms(in_process[name]) if name in in_process else "-"]
        cells += [ms(columns[c][name]) if c in columns else "n/a" for c in (1, 8)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [
        f"| `age-demo` loop, measured whole (batches of 32) | {ms(demo_cpu)} | | |",
        "",
        "In-process stages sum the costs of each stage run alone (model at batch 32); through the service the model's "
        "share is the in-process cost at the mean batch the batcher formed ("
        + ", ".join(f"{c} clients: {served[c]['faces per call']:.1f} faces" for c in served)
        + "), and the two "
        "serving rows are the server's measured thread CPU less the pipeline's share (event loop: less response "
        "building and JSON, which run there). A negative remainder means a stage ran cheaper in the service than "
        "alone (warm caches, or TensorFlow's threads spinning less).",
    ]
    if 1 in columns:
        lines.append(
            f"At 1 client the server spends **{columns[1]['total'] / demo_cpu:.2f}x** `age-demo`'s CPU per photo "
            f"(target at most 1.2x); `age-demo` in-process: **{ms(demo_cpu)} ms** of CPU per photo (target at most 10)."
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="the .h5 to profile (default: models/default.h5 if present)")
    parser.add_argument("--images", type=int, default=200, help="UTKFace photos")
    parser.add_argument("--rounds", type=int, default=2, help="passes over the photos per service level")
    args = parser.parse_args(argv)
    if not (DATA / "utkface" / "labels.csv").is_file():
        print(f"bench_profile: needs {DATA}/utkface/labels.csv", file=sys.stderr)
        return 1
    files = sample_images(args.images)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        chosen, described = pick_model(args.model, workdir)
        config = write_config(chosen, workdir)
        stages, model = pipeline_stages(files, config)
        run_demo = demo_runner(files, config, workdir)
        demo_cpu = statistics.median(run_demo()[1] for _ in range(3))
        served = {clients: service_stages(files, config, clients, args.rounds) for clients in (1, 8)}
    lines = report(stages, model, demo_cpu, served, described, len(files))
    write_section("profile", lines)
    raw = {"in_process": stages, "model_per_face": model, "demo_cpu": demo_cpu, "service": served}
    (BENCH / "profile.json").write_text(json.dumps(raw, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
