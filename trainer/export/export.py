"""``age-export``: a ``.h5`` model as a TensorFlow SavedModel, an ONNX file or a TFLite flat buffer, checked first.

Every format holds the whole Keras network traced to one ``tf.function``: face chips in, CORAL logits out, with
whatever the model file carries inside (pixel scaling, mirror-image averaging, ensemble members, custom ``core``
layers), so no layer type is special-cased. Input ``chips``: float32 ``(N, S, S, 3)`` RGB pixels in 0..255, cut by
``core.face.FaceAligner`` with the model's ``img_size`` and ``chip_padding``; output ``logits``: float32
``(N, K-1)``; ``sigmoid(logits[:, k])`` = P(age > ``start_label`` + k) (Cao et al. 2020, arXiv 1901.07884).

An export is written under a temporary name beside ``--out``, loaded back with its own runtime (TensorFlow,
onnxruntime, the TFLite interpreter) and run on real face chips; only when its logits are within ``--tolerance``
of the ``.h5``'s and its probabilities are rank-monotone is it renamed into place, with ``OUT.json`` (the sidecar:
the model's metadata plus what the export is). A failed check leaves nothing behind.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core.artifact import file_sha256, read_metadata
from core.errors import AgeEstimationError
from trainer.export.formats import FORMATS, SUFFIXES, convert, run_export

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECK_IMAGES = REPO_ROOT / "tests" / "fixtures"
DEFAULT_TOLERANCE = 1e-4
MONOTONE_SLACK = 1e-6
"""Float32 round-off allowed when checking that P(age > k) does not increase with k."""


class ExportCheckError(AgeEstimationError):
    """The converted model disagrees with the ``.h5`` (logits too far apart, or probabilities not rank-monotone)."""


@dataclass(frozen=True)
class ExportReport:
    """What was written and how closely it matches: ``max_abs_diff`` over ``chips`` chips, in logit units."""

    path: Path
    sidecar: Path
    format: str
    chips: int
    max_abs_diff: float


def face_chips(folder: Path, metadata: dict[str, Any], limit: int) -> np.ndarray:
    """Up to ``limit`` face chips ``(n, S, S, 3)`` uint8 from the photos of ``folder`` (sorted, not recursive),
    aligned with ``core.face`` exactly as the service aligns them (the model's size, padding and detector)."""
    from core.errors import ImageError
    from core.face import FaceAligner
    from core.image import read_image

    aligner = FaceAligner.from_metadata(metadata)
    chips: list[np.ndarray] = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            faces = aligner.align(read_image(path))
        except ImageError:
            continue
        chips.extend(face.chip for face in faces)
        if len(chips) >= limit:
            break
    if not chips:
        raise AgeEstimationError(f"{folder}: no face found in any photo; --check-images needs real face photos")
    return np.stack(chips[:limit])


def check(reference: np.ndarray, exported: np.ndarray, tolerance: float, what: str) -> float:
    """Raise ``ExportCheckError`` unless ``exported`` logits ``(N, K-1)`` match ``reference`` within ``tolerance``
    and ``sigmoid(exported)`` is non-increasing along the ranks; return the largest absolute difference."""
    if exported.shape != reference.shape:
        raise ExportCheckError(f"{what}: logits of shape {exported.shape}, the .h5 gives {reference.shape}")
    diff = float(np.max(np.abs(exported.astype(np.float64) - reference)))
    if not diff <= tolerance:
        raise ExportCheckError(f"{what}: logits differ from the .h5's by up to {diff:.3g} (tolerance {tolerance:g})")
    probas = 1.0 / (1.0 + np.exp(-exported.astype(np.float64)))
    rises = float(np.max(np.diff(probas, axis=1), initial=0.0))
    if rises > MONOTONE_SLACK:
        raise ExportCheckError(f"{what}: P(age > k) rises with k by up to {rises:.3g}; not rank-monotone")
    return diff


def sidecar_body(model_file: Path, metadata: dict[str, Any], fmt: str, report: dict[str, Any]) -> dict[str, Any]:
    """The JSON written beside an export: what a client needs to cut chips and decode ages, and the check."""
    size = int(metadata["img_size"])
    start = int(metadata["start_label"])
    classes = int(metadata["num_classes"])
    return {
        "format": fmt,
        "source": {"file": model_file.name, "sha256": file_sha256(model_file)},
        "input": {"name": "chips", "dtype": "float32", "shape": [None, size, size, 3], "pixels": "RGB 0..255"},
        "output": {"name": "logits", "dtype": "float32", "shape": [None, classes - 1]},
        "start_label": start,
        "end_label": int(metadata.get("end_label", start + classes - 1)),
        "num_classes": classes,
        "img_size": size,
        "chip_padding": float(metadata["chip_padding"]),
        "detector": metadata.get("detector", "hog"),
        "upsample": int(metadata.get("upsample", 0)),
        "threshold": float(metadata["threshold"]),
        "calibration": metadata.get("calibration"),
        "check": report,
        "metadata": metadata,
    }


def export(
    model_file: Path,
    fmt: str,
    out: Path,
    chips: np.ndarray,
    tolerance: float = DEFAULT_TOLERANCE,
) -> ExportReport:
    """Convert ``model_file`` to ``fmt`` at ``out`` and check it on ``chips`` ``(N, S, S, 3)`` uint8 before keeping
    it. Raises ``ExportCheckError`` (nothing written) when the check fails, ``ModelFileError`` for a bad model."""
    import tensorflow as tf

    from core.artifact import load_model

    if fmt not in FORMATS:
        raise AgeEstimationError(f"--format must be one of {', '.join(FORMATS)} (got {fmt!r})")
    metadata = read_metadata(model_file)
    model = load_model(model_file)
    size = int(metadata["img_size"])
    forward = tf.function(
        lambda images: {"logits": model(images, training=False)},
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.float32, name="chips")],
    )
    pixels = chips.astype(np.float32)
    reference = np.asarray(model(pixels, training=False), dtype=np.float64)
    out.parent.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        staged = workdir / f"model{SUFFIXES[fmt]}"
        convert(fmt, model, forward, staged)
        diff = check(reference, run_export(fmt, staged, pixels), tolerance, f"{fmt} export of {model_file}")
        report = {"chips": len(chips), "max_abs_logit_diff": diff, "tolerance": tolerance}
        sidecar = Path(f"{out}.json")
        staged_sidecar = workdir / "sidecar.json"
        staged_sidecar.write_text(json.dumps(sidecar_body(model_file, metadata, fmt, report), indent=2) + "\n")
        _replace(staged, out)
        os.replace(staged_sidecar, sidecar)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return ExportReport(out, sidecar, fmt, len(chips), diff)


def _replace(staged: Path, target: Path) -> None:
    """Move ``staged`` onto ``target``; a directory (SavedModel) replaces an older one only once it is in place."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(staged, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staged, target)
