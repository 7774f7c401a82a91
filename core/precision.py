"""Reduced precision as a measured choice: int8 quantisation of the ONNX network and the report that accepts it.

int8 is ONNX Runtime's post-training static quantisation in QDQ form (Jacob et al. 2018, "Quantization and Training
of Neural Networks for Efficient Integer-Arithmetic-Only Inference"): weights int8 per output channel, activations
uint8 with ranges from min/max calibration on training chips. The pixel scaling before the first convolution and
the CORAL head (from the first MatMul/Gemm on) stay float32: the head's K-1 logits share one weight vector and
differ by their biases, so rounding them to one uint8 scale would move ages (on the shipped model, quantising the
head costs 0.05 years of held-out MAE; keeping it float costs nothing measurable and no speed).

``<stem>.precision.json`` beside the ``.h5`` records, for the file of a given sha256, each precision's held-out
MAE, 90% interval coverage and share of ages that move against float32, and whether it is ``accepted``: MAE within
``MAE_TOLERANCE`` years and coverage within ``COVERAGE_TOLERANCE`` of float32. ``core.engine`` runs int8 by default
only where that report accepts it for exactly this file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from core.artifact import file_sha256

MAE_TOLERANCE = 0.05
"""Years of held-out MAE a reduced precision may lose against float32 and still ship as the default."""
COVERAGE_TOLERANCE = 0.01
"""Share (one point) of held-out 90% interval coverage a reduced precision may move against float32."""


def report_path(model_file: Path) -> Path:
    """``<stem>.precision.json`` beside ``model_file``."""
    return model_file.with_name(f"{model_file.stem}.precision.json")


def int8_path(model_file: Path) -> Path:
    """``<stem>.int8.onnx`` beside ``model_file``."""
    return model_file.with_name(f"{model_file.stem}.int8.onnx")


def read_report(model_file: Path) -> dict[str, Any] | None:
    """The precision report of ``model_file`` when one exists beside it and names this file's sha256."""
    path = report_path(model_file)
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("model_sha256") != file_sha256(model_file):
        return None
    return report


def accepted_int8(model_file: Path) -> Path | None:
    """The int8 ONNX file of ``model_file`` when its report accepted int8 and the file is there; else ``None``."""
    report = read_report(model_file)
    entry = (report or {}).get("precisions", {}).get("int8", {})
    path = int8_path(model_file)
    return path if entry.get("accepted") is True and path.is_file() else None


def score(logits: np.ndarray, ages: np.ndarray, metadata: dict[str, Any], coverage: float = 0.9) -> dict[str, Any]:
    """Held-out figures of logits ``(N, K-1)`` against true ``ages`` (years): ``mae``, ``coverage`` of the
    (calibrated, when the model is) central ``coverage`` interval, and the predicted ages themselves."""
    from core.calibration import Calibration, interval_mass
    from core.coral import labels_from_probas, probas_from_logits
    from core.distribution import central_interval

    start = int(metadata["start_label"])
    probas = probas_from_logits(logits)
    predicted = start + labels_from_probas(probas, float(metadata["threshold"]))
    ranks = np.clip(np.rint(ages).astype(np.int64) - start, 0, logits.shape[1])
    low, high = central_interval(probas, interval_mass(Calibration.from_metadata(metadata), coverage, probas))
    return {
        "mae": round(float(np.abs(predicted - ages).mean()), 4),
        "coverage": round(float(((low <= ranks) & (ranks <= high)).mean()), 4),
        "predicted": predicted,
    }


def verdict(candidate: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``candidate``'s figures against float32's: the differences, ``moved`` (share of ages that change),
    ``moved_over_a_year`` (by more than one year) and ``accepted`` (within both tolerances)."""
    mae_change = candidate["mae"] - reference["mae"]
    coverage_change = candidate["coverage"] - reference["coverage"]
    change = np.abs(candidate["predicted"] - reference["predicted"])
    return {
        "mae": candidate["mae"],
        "coverage": candidate["coverage"],
        "mae_change": round(mae_change, 4),
        "coverage_change": round(coverage_change, 4),
        "moved": round(float((change > 0).mean()), 4),
        "moved_over_a_year": round(float((change > 1).mean()), 4),
        "accepted": bool(mae_change <= MAE_TOLERANCE and abs(coverage_change) <= COVERAGE_TOLERANCE),
    }


def write_report(model_file: Path, report: dict[str, Any]) -> Path:
    """Write ``report`` (with this file's sha256 and the tolerances added) as ``<stem>.precision.json``."""
    body = {
        "model_sha256": file_sha256(model_file),
        "tolerance": {"mae_years": MAE_TOLERANCE, "coverage": COVERAGE_TOLERANCE},
        **report,
    }
    path = report_path(model_file)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def quantize_int8(float_onnx: Path, target: Path, calibration_chips: np.ndarray, batch: int = 16) -> None:
    """Write ``float_onnx`` quantised to int8 (QDQ, per-channel weights) at ``target``, activation ranges from
    ``calibration_chips`` uint8 ``(N, S, S, 3)`` (training chips, never the held-out ones)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Chips(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches: Iterator[np.ndarray] = (
                calibration_chips[i : i + batch] for i in range(0, len(calibration_chips), batch)
            )

        def get_next(self) -> dict[str, np.ndarray] | None:
            chips = next(self._batches, None)
            return None if chips is None else {"chips": chips}

    prepared = target.with_name(f".{target.name}.pre.onnx")
    try:
        quant_pre_process(str(float_onnx), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(target),
            Chips(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            weight_type=QuantType.QInt8,
            activation_type=QuantType.QUInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=float_nodes(onnx.load(str(prepared))),
        )
    finally:
        prepared.unlink(missing_ok=True)


def float_nodes(model: Any) -> list[str]:
    """Nodes that stay float32: everything before the first convolution (the pixel scaling) and from the first
    MatMul/Gemm (the CORAL head) on, in the graph's topological order."""
    nodes = list(model.graph.node)
    first_conv = next((i for i, node in enumerate(nodes) if node.op_type == "Conv"), 0)
    head = next((i for i, node in enumerate(nodes) if node.op_type in ("MatMul", "Gemm")), len(nodes))
    return [node.name for node in nodes[:first_conv] + nodes[head:]]
