"""The self-describing model file: a Keras ``.h5`` whose HDF5 root attribute ``age_estimation`` holds JSON metadata.

The metadata travels with the weights so that every consumer (service, demo, evaluation) aligns faces and decodes
ages exactly as the trainer did: ``img_size`` is the face-chip size in pixels, ``chip_padding`` the dlib padding the
chips were cut with, ``start_label`` the age of rank 0 and ``num_classes`` the number of ranks K (the model outputs
K-1 logits). ``read_metadata`` needs h5py only; TensorFlow is imported lazily by ``save_model``/``load_model``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py

from core.errors import ModelFileError

if TYPE_CHECKING:
    import keras

__all__ = [
    "METADATA_ATTR",
    "REQUIRED_KEYS",
    "file_sha256",
    "load_model",
    "model_id",
    "read_metadata",
    "save_model",
]

METADATA_ATTR = "age_estimation"
REQUIRED_KEYS = (
    "start_label",
    "num_classes",
    "img_size",
    "chip_padding",
    "threshold",
    "arch_type",
    "arch_subtype",
)


def _check_metadata(metadata: dict[str, Any], source: str) -> dict[str, Any]:
    missing = [key for key in REQUIRED_KEYS if key not in metadata]
    if missing:
        raise ModelFileError(f"{source}: model metadata lacks {', '.join(missing)}")
    if int(metadata["num_classes"]) < 2:
        raise ModelFileError(f"{source}: num_classes must be >= 2 (got {metadata['num_classes']})")
    if not 0.0 < float(metadata["threshold"]) < 1.0:
        raise ModelFileError(f"{source}: threshold must lie in (0, 1) (got {metadata['threshold']})")
    return metadata


def save_model(model: keras.Model, path: str | os.PathLike[str], metadata: dict[str, Any]) -> Path:
    """Write ``model`` and ``metadata`` to ``path`` (``.h5``) atomically; return the path.

    The file is written next to its destination under a temporary name and renamed into place only when complete,
    so a crash or kill never leaves a half-written model. ``metadata`` must hold every key in ``REQUIRED_KEYS`` and
    be JSON-serialisable; it is checked against the model's input and output shapes before anything is written.
    """
    target = Path(path)
    if target.suffix != ".h5":
        raise ModelFileError(f"{target}: the model file name must end in .h5")
    metadata = _check_metadata(dict(metadata), str(target))
    _check_against_model(model, metadata, str(target))
    payload = json.dumps(metadata, sort_keys=True, default=str)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Keras picks the format from the extension, so the temporary name must end in .h5 too.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=".tmp.h5", dir=target.parent)
    os.close(fd)
    try:
        _save_h5(model, tmp_name)
        with h5py.File(tmp_name, "a") as handle:
            handle.attrs[METADATA_ATTR] = payload
        # mkstemp creates the file private (0600); a model is meant to be read by others (a container's user).
        os.chmod(tmp_name, 0o666 & ~_umask())
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _save_h5(model: keras.Model, filename: str) -> None:
    import keras

    keras.saving.save_model(model, filename, include_optimizer=False)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a model file (or any file), read in 1 MiB blocks: the identity clients and exports quote."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_id(name: str, sha256: str, version: int | None = None) -> str:
    """``name[:version]@sha256:<first 12 hex digits>``: how every answer (the service's, ``age-batch``'s rows) names
    the model file it came from, e.g. ``age:2@sha256:3f1c2a9b8e7d``; ``sha256`` is :func:`file_sha256`'s."""
    tag = "" if version is None else f":{version}"
    return f"{name}{tag}@sha256:{sha256[:12]}"


def read_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Return the metadata dict stored in the ``.h5`` at ``path``, using h5py only (no TensorFlow).

    Raises ``ModelFileError`` when the file is missing, is not a readable HDF5 file (truncated, corrupt) or has no
    valid ``age_estimation`` metadata.
    """
    source = Path(path)
    if not source.is_file():
        raise ModelFileError(f"{source}: model file not found")
    try:
        with h5py.File(source, "r") as handle:
            raw = handle.attrs.get(METADATA_ATTR)
    except OSError as exc:
        raise ModelFileError(f"{source}: not a readable .h5 model file (truncated or corrupt?): {exc}") from None
    if raw is None:
        raise ModelFileError(f"{source}: no '{METADATA_ATTR}' metadata; was it saved with core.artifact.save_model?")
    try:
        metadata = json.loads(raw.decode() if isinstance(raw, bytes) else str(raw))
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source}: '{METADATA_ATTR}' metadata is not valid JSON: {exc}") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{source}: '{METADATA_ATTR}' metadata must be a JSON object")
    return _check_metadata(metadata, str(source))


def load_model(path: str | os.PathLike[str]) -> keras.Model:
    """Load the Keras model at ``path`` (uncompiled, with the CORAL custom objects) after checking its metadata.

    Raises ``ModelFileError`` when the file is missing, truncated or corrupt, lacks metadata, or when the metadata
    disagrees with the network (``num_classes - 1`` vs output width, ``img_size`` vs input shape).
    """
    metadata = read_metadata(path)
    import keras

    # Importing these registers CoralLayer, HorizontalFlip and the backbones' layers with Keras before the file is read.
    import core.coral
    import core.layers
    import core.tta  # noqa: F401

    try:
        model = keras.saving.load_model(str(path), compile=False)
    except Exception as exc:
        raise ModelFileError(f"{path}: could not load the Keras model: {exc}") from None
    _check_against_model(model, metadata, str(path))
    return model


def _check_against_model(model: keras.Model, metadata: dict[str, Any], source: str) -> None:
    outputs = int(model.output_shape[-1])
    if outputs != int(metadata["num_classes"]) - 1:
        raise ModelFileError(
            f"{source}: metadata num_classes={metadata['num_classes']} needs {int(metadata['num_classes']) - 1} "
            f"outputs, but the model has {outputs}"
        )
    height, width = model.input_shape[1:3]
    size = int(metadata["img_size"])
    if (height, width) != (size, size):
        raise ModelFileError(f"{source}: metadata img_size={size} but the model's input is {height}x{width}")
