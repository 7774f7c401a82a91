"""``GET /model``: what a client needs to know about the model served, and which file it is exactly.

Everything comes from the model as loaded, never from the disk now: its id and ``sha256`` were computed from the
file's bytes when it was loaded (``service.model_repository.ModelIdentity``), so after the file is replaced, or a new
version appears, ``/model`` names the weights that still answer until the new ones are loaded and swapped in. The
rest says how to cut chips for it (``img_size``, ``chip_padding``, ``detector``, ``upsample``, as ``core.face``
does), how to read its answers (label range, served threshold, calibration) and how well it did on its test split.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from core.calibration import Calibration
from core.distribution import REPORTED_COVERAGES
from service.runtime import ReadyRuntimeDep, Runtime
from service.schemas import ErrorResponse

router = APIRouter()


def calibration_summary(metadata: dict[str, Any]) -> dict[str, Any] | None:
    """The calibration without its scores: method, size, source, the interval mass for common coverages, and the
    same per group of predicted age when the calibration is age-conditional."""
    calibration = Calibration.from_metadata(metadata)
    if calibration is None:
        return None
    start = int(metadata["start_label"])
    return {
        "method": Calibration.MONDRIAN if calibration.groups else Calibration.METHOD,
        "n": calibration.n,
        "source": calibration.source,
        "outside_range": calibration.outside_range,
        "interval_mass": {str(coverage): calibration.mass(coverage) for coverage in REPORTED_COVERAGES},
        # Age-conditional calibration: each group of predicted age (years, inclusive; null: no upper end) has its own
        # masses, and a face's interval uses its group's.
        "groups": [group.summary(start, REPORTED_COVERAGES) for group in calibration.groups],
    }


def repository_summary(runtime: Runtime) -> dict[str, Any] | None:
    """With ``MODEL_REPOSITORY``: its folder and the versions skipped as unservable, with the reason."""
    source = runtime.reloader.source if runtime.reloader is not None else None
    if source is None or source.repository is None:
        return None
    skipped = [{"version": version, "reason": reason} for version, (_, reason) in sorted(source.skipped.items())]
    return {"path": str(source.repository), "skipped": skipped}


@router.get("/model", responses={503: {"model": ErrorResponse, "description": "not ready yet, or failed"}})
async def model(runtime: ReadyRuntimeDep) -> dict[str, Any]:
    """The served model's identity (file name, ``sha256``, size), label range, chip geometry, threshold,
    calibration and test metrics."""
    predictor = runtime.predictor
    assert predictor is not None
    assert predictor.identity is not None
    meta, identity = predictor.metadata, predictor.identity
    start, classes = int(meta["start_label"]), int(meta["num_classes"])
    return {
        "id": identity.id,
        "name": identity.name,
        "version": identity.version,
        "file": identity.file.name,
        "sha256": identity.sha256,
        "bytes": identity.bytes,
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
        **predictor.engine_summary,
        "repository": repository_summary(runtime),
    }
