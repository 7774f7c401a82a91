"""``GET /model``: what a client needs to know about the model served, and which file it is exactly.

The ``sha256`` of the ``.h5`` names the weights unambiguously (two files called ``default.h5`` may differ); the rest
says how to cut chips for it (``img_size``, ``chip_padding``, ``detector``, ``upsample``, as ``core.face`` does),
how to read its answers (label range, served threshold, calibration) and how well it did on its test split.
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from core import artifact
from core.distribution import Calibration
from service.runtime import ReadyRuntimeDep
from service.schemas import ErrorResponse
from service.settings import load_predict_config

router = APIRouter()

COVERAGES = (0.5, 0.8, 0.9, 0.95)


@functools.lru_cache(maxsize=4)
def _sha256(path: Path, mtime_ns: int, size: int) -> str:
    """Hex SHA-256 of ``path``; the cache key includes its modification time and size, so a new file is hashed."""
    return artifact.file_sha256(path)


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _sha256(path.resolve(), stat.st_mtime_ns, stat.st_size)


def calibration_summary(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration without its scores: method, size, source and the interval mass for common coverages."""
    calibration = Calibration.from_metadata(metadata)
    if calibration is None:
        return None
    return {
        "method": Calibration.METHOD,
        "n": calibration.n,
        "source": calibration.source,
        "outside_range": calibration.outside_range,
        "interval_mass": {str(coverage): calibration.mass(coverage) for coverage in COVERAGES},
    }


def model_file(settings: Any) -> Path:
    """The ``.h5`` the service was started with: ``MODEL_PATH``/``--model``, else the predict config's."""
    if settings.model_path is not None:
        return Path(settings.model_path)
    return load_predict_config(settings.predict_config).resolve_model_path(settings.predict_config)


@router.get("/model", responses={503: {"model": ErrorResponse, "description": "not ready yet, or failed"}})
async def model(runtime: ReadyRuntimeDep) -> dict[str, Any]:
    """The served model's identity (file name, ``sha256``, size), label range, chip geometry, threshold,
    calibration and test metrics."""
    predictor = runtime.predictor
    assert predictor is not None
    meta = predictor.metadata
    path = model_file(runtime.settings)
    sha256 = await asyncio.to_thread(file_sha256, path)
    start, classes = int(meta["start_label"]), int(meta["num_classes"])
    return {
        "id": f"{path.stem}@sha256:{sha256[:12]}",
        "file": path.name,
        "sha256": sha256,
        "bytes": path.stat().st_size,
        "arch_type": meta.get("arch_type"),
        "arch_subtype": meta.get("arch_subtype"),
        "members": len(meta.get("members", [])) or 1,
        "created": meta.get("created"),
        "start_label": start,
        "end_label": int(meta.get("end_label", start + classes - 1)),
        "num_classes": classes,
        "img_size": int(meta["img_size"]),
        "chip_padding": float(meta["chip_padding"]),
        "detector": meta.get("detector", "hog"),
        "upsample": int(meta.get("upsample", 0)),
        "threshold": predictor.threshold,
        "model_threshold": float(meta["threshold"]),
        "test_time_flip": bool(meta.get("test_time_flip", False)),
        "calibration": calibration_summary(meta),
        "test_metrics": meta.get("test_metrics"),
        "device": predictor.device,
    }
