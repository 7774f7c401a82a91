"""Where a backbone's pretrained weights come from, checked before any work so that a missing file costs a second.

``pretrained`` (train config): ``None`` trains from scratch; ``"dlib"`` takes dlib's face-recognition weights from
the installed ``face-recognition-models`` package (read by ``trainer.model.backbones.dlib_dat``; no download);
``"imagenet"`` takes ``keras.applications``' ImageNet weights, which Keras downloads on first use into
``~/.keras/models`` (an offline machine needs them copied there first); any other value is a file path.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import ConfigError
from trainer.training.config import TrainConfig

__all__ = ["check_pretrained", "pretrained_name"]


def check_pretrained(config: TrainConfig) -> None:
    """Make sure the weights ``config.pretrained`` names can be had; raise ``ConfigError`` naming the key if not.

    For ``"imagenet"`` this fetches the weights file (or finds it in Keras' cache) exactly as
    ``keras.applications`` will, so an offline machine fails here, in one line, before reading any data.
    """
    if config.pretrained is None:
        return
    if config.pretrained == "dlib":
        from trainer.model.backbones.face_resnet import dlib_weights_path

        try:
            path = dlib_weights_path()
        except ImportError as exc:
            raise ConfigError(f"pretrained: 'dlib' needs the face-recognition-models package ({exc})") from None
        if not path.is_file():
            raise ConfigError(f"pretrained: dlib's weights file is missing: {path}")
        return
    if config.pretrained == "imagenet":
        _fetch_imagenet(config)


def _fetch_imagenet(config: TrainConfig) -> None:
    import keras

    from trainer.model.build import _applications

    constructor = _applications()[(config.arch_type, config.arch_subtype)]
    try:
        constructor(include_top=False, weights="imagenet", input_shape=(config.img_size, config.img_size, 3))
    except Exception as exc:
        cache = Path(keras.config.keras_home() if hasattr(keras.config, "keras_home") else "~/.keras") / "models"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConfigError(
            f"pretrained: 'imagenet' weights for {config.arch_type}{config.arch_subtype} could not be fetched "
            f"({reason}); on an offline machine copy Keras' weights file into {cache}, or pass its path"
        ) from None


def pretrained_name(pretrained: str | None) -> str | None:
    """What the model's metadata records: ``None``, ``"dlib"``, ``"imagenet"`` or the weights file's name."""
    if pretrained in (None, "dlib", "imagenet"):
        return pretrained
    return Path(str(pretrained)).name
