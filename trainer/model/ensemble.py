"""``age-ensemble --models A.h5 B.h5 [...] --out OUT.h5``: several trained models -> one self-describing ``.h5``.

The ensemble's logits are the mean of its members' logits. That keeps CORAL's rank consistency: each member's
logits are ``g_m(x) + b_mk`` with biases ordered in ``k``, so the mean is ``mean_m g_m(x) + mean_m b_mk``, and a mean
of sequences that all decrease in ``k`` decreases too (the same argument as ``core.tta``). The result is one Keras
model file with the usual metadata, so the service, ``age-demo`` and ``age-evaluate`` use it without knowing that it
is an ensemble; each forward pass costs the sum of the members' passes.

Members must agree on everything that decides how a face is aligned and an age decoded (``COMPATIBLE_KEYS``); a
mismatch is refused naming the key and both files. Chip sizes may differ: the ensemble takes chips at the largest
member's ``img_size`` and hands each smaller member the chip resized inside the model (bilinear, antialiased: the
same ``tf.image.resize`` that ``age-train`` applies when its aligned chips are larger than ``img_size``). Members of
different resolutions disagree more than members of one, so their mean gains more (see ``models/README.md``). A
member that is itself an ensemble contributes its own members, each weighing as much
as any other: ``--models models/default.h5 new.h5`` makes a four-member ensemble.

With ``--csv`` and ``--images`` (aligned chips, as ``age-evaluate --aligned`` reads them, e.g. a run folder's
``test.csv``) the ensemble is scored before it is written and the scores replace the members' ``test_metrics`` in
the metadata; its intervals are calibrated (split-conformal, ``core.distribution``) on that set, or on
``--calibrate-csv`` (better: a set other than the one it is scored on, e.g. the run's ``val.csv``).
``--drop-flip`` unwraps each member's mirror-image averaging (``test_time_flip``): half the forward passes, and with
several members the ensemble already averages away most of what the mirror image adds (the earlier three-member
default model: validation MAE 5.50 either way).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ConfigError

__all__ = ["COMPATIBLE_KEYS", "build_ensemble", "ensemble_metadata", "make_ensemble"]

COMPATIBLE_KEYS = (
    "start_label",
    "end_label",
    "num_classes",
    "chip_padding",
    "detector",
    "upsample",
    "threshold",
)


def ensemble_metadata(paths: list[Path], metadatas: list[dict[str, Any]]) -> dict[str, Any]:
    """The ensemble's metadata: the first member's, checked against every other member, plus a ``members`` list.

    Raises ``ConfigError`` when fewer than two members are given or when two disagree on a ``COMPATIBLE_KEYS`` key.
    """
    if len(paths) < 2:
        raise ConfigError(f"--models: an ensemble needs at least two model files (got {len(paths)})")
    first, reference = paths[0], metadatas[0]
    for path, meta in zip(paths[1:], metadatas[1:], strict=True):
        for key in COMPATIBLE_KEYS:
            if meta.get(key) != reference.get(key):
                raise ConfigError(
                    f"--models: {path.name} has {key}={json.dumps(meta.get(key))} but {first.name} has "
                    f"{key}={json.dumps(reference.get(key))}; members must align faces and decode ages alike"
                )
    from trainer.training.run_folder import shown_path

    merged = {key: value for key, value in reference.items() if key not in ("test_metrics", "run_dir", "created")}
    if isinstance(merged.get("trained_on"), str):
        merged["trained_on"] = shown_path(merged["trained_on"])
    merged["img_size"] = max(int(meta["img_size"]) for meta in metadatas)
    merged["members"] = []
    for path, meta in zip(paths, metadatas, strict=True):
        if meta.get("members"):  # an ensemble contributes its own members
            merged["members"] += [
                {"img_size": int(meta["img_size"])} | entry | {"via": path.name} for entry in meta["members"]
            ]
            continue
        merged["members"].append(
            {
                "file": path.name,
                "img_size": int(meta["img_size"]),
                "arch": f"{meta['arch_type']}{meta['arch_subtype']}",
                "width": meta.get("width"),
                "test_metrics": meta.get("test_metrics"),
                "run_dir": shown_path(meta["run_dir"]) if isinstance(meta.get("run_dir"), str) else None,
            }
        )
    merged["created"] = datetime.now(UTC).isoformat(timespec="seconds")
    return merged


def build_ensemble(members: list[Any], img_size: int) -> Any:
    """One Keras model on ``img_size`` chips whose output is the mean of ``members``' logits.

    The members keep their weights; a member with a smaller input gets the chip resized (bilinear, antialiased) in
    the model. Each member is renamed ``member_<i>`` so that its weights have a distinct place in the ``.h5`` file.
    """
    import keras

    inputs = keras.Input((img_size, img_size, 3), name="image")
    outputs = []
    for index, member in enumerate(members):
        member.name = f"member_{index}"
        size = int(member.input_shape[1])
        if size > img_size:
            raise ConfigError(f"member {index} takes {size}-pixel chips, more than the ensemble's {img_size}")
        chips = inputs
        if size < img_size:
            resize = keras.layers.Resizing(size, size, antialias=True, name=f"resize_{index}_to_{size}")
            chips = resize(inputs)
        outputs.append(member(chips))
    logits = keras.layers.Average(name="ensemble_average", dtype="float32")(outputs)
    return keras.Model(inputs, logits, name=f"coral_ensemble_{len(members)}")


def make_ensemble(
    paths: list[Path],
    out: Path,
    csv_path: Path | None = None,
    images: Path | None = None,
    drop_flip: bool = False,
    calibrate_csv: Path | None = None,
) -> tuple[Path, dict[str, Any], dict[str, Any] | None]:
    """Load, check, combine, optionally score and calibrate, and atomically save; return ``(out, metadata, scores)``.

    With ``drop_flip`` each member's flip averaging (``test_time_flip``) is unwrapped, halving the forward passes.
    The calibration (``core.distribution``) is fitted on ``calibrate_csv`` (chips under ``images``), else on
    ``csv_path``; with neither the ensemble is uncalibrated (the members' calibrations do not carry over).
    """
    from core.artifact import read_metadata, save_model
    from core.tta import without_flip_averaging

    if (csv_path is None and calibrate_csv is None) != (images is None):
        raise ConfigError("--images goes with --csv or --calibrate-csv, and they need it")
    if out.suffix != ".h5":
        raise ConfigError(f"--out {out}: the model file name must end in .h5")
    if out.resolve() in {path.resolve() for path in paths}:
        raise ConfigError(f"--out {out}: would overwrite one of the members")
    metadatas = [read_metadata(path) for path in paths]
    metadata = ensemble_metadata(paths, metadatas)
    members = [member for path, meta in zip(paths, metadatas, strict=True) for member in _networks(path, meta)]
    if drop_flip:
        members = [without_flip_averaging(member) for member in members]
        metadata["test_time_flip"] = False
    model = build_ensemble(members, int(metadata["img_size"]))
    scores, calibration = None, None
    metadata.pop("calibration", None)
    if csv_path is not None and images is not None:
        scores, calibration = score(model, metadata, csv_path, images)
        metadata["test_metrics"] = {key: scores[key] for key in ("mae", "rmse", "cs5", "n")}
        metadata["test_csv"] = csv_path.name
    if calibrate_csv is not None and images is not None:
        calibration = score(model, metadata, calibrate_csv, images)[1]
    if calibration is not None:
        metadata["calibration"] = calibration.to_metadata()
    return save_model(model, out, metadata), metadata, scores


def _networks(path: Path, metadata: dict[str, Any]) -> list[Any]:
    """The model in ``path``, or its members when it is an ensemble itself (each then weighs as much as any other
    member: ``default.h5`` plus one new model is a four-member ensemble, not a half-and-half mean)."""
    import keras

    from core.artifact import load_model

    model = load_model(path)
    if not metadata.get("members"):
        return [model]
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) != len(metadata["members"]):
        raise ConfigError(
            f"--models: {path.name} lists {len(metadata['members'])} members in its metadata but holds {len(inner)}"
        )
    return inner


def score(model: Any, metadata: dict[str, Any], csv_path: Path, images: Path) -> tuple[dict[str, Any], Any]:
    """MAE, RMSE, CS@5 of ``model`` on aligned chips listed in ``csv_path`` (``Path`` relative to ``images``), and
    the calibration fitted on them (``core.calibration.Calibration``)."""
    from core.coral import labels_from_probas, probas_from_logits
    from trainer.data.labels import read_age_csv
    from trainer.evaluation.calibrate import fit_calibration
    from trainer.evaluation.metrics import age_metrics
    from trainer.evaluation.scoring import aligned_batches, predict_logits

    table = read_age_csv(csv_path, images)
    batches, usable, _ = aligned_batches(table, int(metadata["img_size"]), 64)
    if usable == 0:
        raise ConfigError(f"--csv {csv_path}: none of its images exist under {images}")
    rows, logits = predict_logits(model, batches)
    truth = table["Age"].to_numpy()[rows.astype(int)]
    start = int(metadata["start_label"])
    predicted = start + labels_from_probas(probas_from_logits(logits), float(metadata["threshold"]))
    return age_metrics(truth, predicted), fit_calibration(logits, truth, start, csv_path.name)
