"""One ``age-batch`` run as named steps: :func:`prepare` (photos, model, what is already written), :func:`connect`
(Ray), :func:`build` (the Ray Data dataset of the stages), :func:`consume` (progress and counts).

Resources. Decoding and alignment cost far more than the network per photo (``bench/RESULTS.md``), so the
alignment actors take one CPU each, as many as there are CPUs (less one per GPU, which feeds a GPU actor). The model
runs on one actor per GPU (``num_gpus=1``); without GPUs, on one CPU actor per 16 CPUs that reserves no CPU of
Ray's accounting, since it idles most of the time while the aligners keep every core busy. Ray Data streams the
chunks through with backpressure: a slow stage holds the ones before it back, never memory.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from batch.inputs import list_photos
from batch.model import DEFAULT_COVERAGE, DEFAULT_MODEL, AgeDecoder, ModelFile
from batch.output import chunks, clear_temporary, committed

if TYPE_CHECKING:
    import ray.data

__all__ = ["BatchJob", "Plan", "Summary", "build", "connect", "consume", "prepare", "run", "start_local_ray"]

DEFAULT_BATCH_SIZE = 64


@dataclass(frozen=True)
class BatchJob:
    """What to score, where to, and with what (the command's arguments)."""

    input: str
    output: str
    model: Path = DEFAULT_MODEL
    address: str | None = None
    num_cpus: int | None = None
    num_gpus: int | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    coverage: float = DEFAULT_COVERAGE
    runtime: str = "auto"
    precision: str = "auto"
    progress: bool = True


@dataclass
class Summary:
    """A run's counts: photos scored now (``photos``, ``faces``, ``errors`` by code), ``skipped`` (already written
    by an earlier run), the seconds of scoring (the actors' start-up included) and, apart, of starting or joining
    Ray."""

    photos: int = 0
    faces: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    skipped: int = 0
    seconds: float = 0.0
    startup_seconds: float = 0.0

    def line(self, output: str) -> str:
        """The one-line summary the command prints last."""
        errors = ", ".join(f"{code} {count}" for code, count in sorted(self.errors.items())) or "none"
        rate = self.photos / self.seconds if self.seconds > 0 else 0.0
        return (
            f"age-batch: {self.photos} photos, {self.faces} faces, errors: {errors}; {rate:.1f} photos/s "
            f"({self.seconds:.1f} s, Ray start-up {self.startup_seconds:.1f} s apart); "
            f"{self.skipped} already written -> {output}"
        )


@dataclass(frozen=True)
class Plan:
    """What :func:`prepare` found: the model, the chunks still to score and how many photos were already written."""

    model: ModelFile
    chunks: list[dict[str, Any]]
    skipped: int

    @property
    def photos(self) -> int:
        """Photos still to score."""
        return sum(len(chunk["paths"]) for chunk in self.chunks)


def prepare(job: BatchJob) -> Plan:
    """List the photos and the parts already written (dropping half-written ones); nothing is scored yet.

    Raises ``FileNotFoundError`` for an input that names nothing, ``ModelFileError`` for a bad model file and
    ``ConfigError`` when the output holds another model's rows.
    """
    model = ModelFile.of(job.model)
    photos = list_photos(job.input)
    done = committed(job.output, model.id)
    clear_temporary(job.output)
    todo = [photo for photo in photos if photo not in done]
    return Plan(model, chunks(todo, job.batch_size), len(photos) - len(todo))


@dataclass(frozen=True)
class Resources:
    """The CPUs and GPUs the stages may use."""

    cpus: int
    gpus: int


RAY_OPTIONS: dict[str, Any] = {
    # Worker output would interleave TensorFlow's and Ray's start-up chatter with the progress bar; errors still
    # reach the driver as exceptions.
    "log_to_driver": False,
    "configure_logging": False,
    "runtime_env": {"env_vars": {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}},
}


def start_local_ray(num_cpus: int | None = None, num_gpus: int | None = None, **options: Any) -> None:
    """Start a Ray instance on this machine for this process (``num_cpus``/``num_gpus``: all when ``None``).

    Its workers run at the command's own priority: Ray starts them at nice 15 (``RAY_worker_niceness``), which
    suits shared cluster nodes but, on a workstation with anything else busy, halves age-batch's rate against
    age-demo's threads (``bench/RESULTS.md``). ``RAY_worker_niceness`` in the environment still wins.
    """
    import ray

    os.environ.setdefault("RAY_worker_niceness", "0")
    ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, **{**RAY_OPTIONS, **options})


def connect(job: BatchJob) -> Resources:
    """Start a local Ray instance (``job.address`` None and no ``RAY_ADDRESS``, which a Ray job's driver has) or
    join a cluster (``auto``, ``ray://host:10001``, ...), unless this process is connected already. Returns the
    CPUs and GPUs to use: the job's caps, else all there are."""
    import ray

    address = job.address or os.environ.get("RAY_ADDRESS")
    if not ray.is_initialized():
        if address:
            ray.init(address=address, **RAY_OPTIONS)
        else:
            start_local_ray(job.num_cpus, job.num_gpus)
    available = ray.cluster_resources()
    cpus = int(available.get("CPU", 1))
    gpus = int(available.get("GPU", 0))
    return Resources(max(1, min(cpus, job.num_cpus or cpus)), min(gpus, gpus if job.num_gpus is None else job.num_gpus))


def build(job: BatchJob, plan: Plan, resources: Resources) -> ray.data.Dataset:
    """The dataset from chunks of photo names to one count row per written part (lazy: nothing runs yet)."""
    import ray
    import ray.data

    from batch.stages import AlignStage, ModelStage, WriteStage

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    # Importing ray.data configured its logger; its per-run INFO lines would break the progress bar.
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    model, gpus = plan.model, resources.gpus
    decoder = AgeDecoder.from_metadata(model.metadata, job.coverage)
    fixed = {"model_id": model.id, "coverage": job.coverage, "calibrated": decoder.calibrated}
    geometry = {key: model.metadata.get(key) for key in ("img_size", "chip_padding", "detector", "upsample")}
    dataset = ray.data.from_items(plan.chunks, override_num_blocks=len(plan.chunks))
    dataset = dataset.map_batches(
        AlignStage,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=min(max(1, resources.cpus - gpus), len(plan.chunks))),
        num_cpus=1,
        fn_constructor_kwargs={"metadata": geometry},
    )
    dataset = dataset.map_batches(
        ModelStage,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=gpus or max(1, resources.cpus // 16)),
        num_cpus=1 if gpus else 0,
        num_gpus=1 if gpus else 0,
        fn_constructor_kwargs={
            # The workers read the metadata from the file: with a calibration it is too large to travel inline.
            "model": dataclasses.replace(model, metadata={}),
            "shipped": [ray.put(Path(model.path).read_bytes())],
            "coverage": job.coverage,
            "runtime": job.runtime,
            "precision": job.precision,
            "threads": 0 if gpus else 1,
        },
    )
    return dataset.map_batches(
        WriteStage,
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=0,
        fn_constructor_kwargs={"output": job.output, "fixed": fixed},
    )


def consume(dataset: ray.data.Dataset, total: int, progress: bool, summary: Summary) -> None:
    """Run the dataset to the end, counting into ``summary``, with a progress bar over ``total`` photos."""
    with tqdm(total=total, unit="photo", desc="age-batch", disable=not progress) as bar:
        for row in dataset.iter_rows():
            summary.photos += int(row["photos"])
            summary.faces += int(row["faces"])
            summary.errors.update(_counts(row["errors"]))
            bar.update(int(row["photos"]))


def _counts(text: str) -> dict[str, int]:
    return {str(code): int(count) for code, count in json.loads(text).items()}


def run(job: BatchJob) -> Summary:
    """Score what ``job`` names and is not written yet; the summary of this run."""
    plan = prepare(job)
    summary = Summary(skipped=plan.skipped)
    if not plan.chunks:
        return summary
    started = time.perf_counter()
    resources = connect(job)
    summary.startup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    consume(build(job, plan, resources), plan.photos, job.progress, summary)
    summary.seconds = time.perf_counter() - started
    return summary
