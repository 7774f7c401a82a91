"""The training job's configuration: a JSON file plus ``--set KEY=VALUE`` overrides, validated by pydantic.

``load_config(path, overrides)`` returns a :class:`TrainConfig` whose paths are absolute, or raises
:class:`core.errors.ConfigError` with one line naming the file and every problem found, each with its key.
Relative paths written in the file resolve against the file's folder; relative paths given with ``--set`` or
left at their defaults resolve against the current directory. Imports neither TensorFlow nor Keras, so that a
bad config costs a fraction of a second.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, model_validator
from pydantic_core import ErrorDetails

from core.errors import ConfigError
from trainer.training.rules import broken_rules

PATH_KEYS = ("img_dir", "csv_path", "output_dir", "run_dir", "pretrained")
PRETRAINED_NAMES = ("dlib", "imagenet")
DEFAULT_RUN_DIR = "runs/{model_prefix}{arch_type}{arch_subtype}_{timestamp}"
DEFAULT_CHIP_PADDING = 0.4

LoosePath = Annotated[Path, Strict(False)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]


class TrainConfig(BaseModel):
    """Every knob of ``age-train``; the seed keys of ``configs/train_config.json`` come first."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    img_dir: LoosePath
    csv_path: LoosePath
    task_weighting: bool = True
    checkpoint: bool = True
    img_size: int = Field(ge=32, le=1024)
    logs: bool = True
    batch_size: int = Field(default=16, ge=1)
    num_epochs: int = Field(default=30, ge=1)
    model_prefix: str = Field(default="coral_", pattern=r"^[A-Za-z0-9._-]*$")
    arch_type: Literal["resnet", "vgg", "face_resnet"] = "resnet"
    arch_subtype: int = 50
    # None: from scratch; "dlib": dlib's face-recognition weights (face_resnet, the default there); "imagenet":
    # keras.applications' weights; any other string: a weights file (see trainer.model.pretrained).
    pretrained: str | None = None
    freeze_backbone_epochs: int = Field(default=0, ge=0)
    backbone_learning_rate: float | None = Field(default=None, gt=0.0, le=1.0)

    learning_rate: float = Field(default=1e-3, gt=0.0, le=1.0)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_epochs: int = Field(default=0, ge=0)
    weight_decay: float = Field(default=0.0, ge=0.0, lt=1.0)
    seed: int = 0
    split_seed: int | None = None
    val_fraction: Fraction = 0.1
    test_fraction: Fraction = 0.1
    start_label: int | None = Field(default=None, ge=0)
    end_label: int | None = Field(default=None, ge=0)
    clip_ages: bool = False
    output_dir: LoosePath = Path("models")
    run_dir: LoosePath = Path(DEFAULT_RUN_DIR)
    augment: bool = True
    augment_zoom: float = Field(default=1.12, ge=1.0, le=2.0)
    augment_greyscale: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_blur: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_jpeg: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_jpeg_quality: int = Field(default=20, ge=1, le=100)
    augment_downscale: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_downscale_min: int = Field(default=32, ge=8)
    augment_color_jitter: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_sepia: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_fade: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_vignette: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_halftone: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_grain: float = Field(default=0.0, ge=0.0, le=1.0)
    augment_dust: float = Field(default=0.0, ge=0.0, le=1.0)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    resume: bool = False
    threshold: float = Field(default=0.5, gt=0.0, lt=1.0)
    chip_padding: float | None = Field(default=None, ge=0.0, le=2.0)
    detector: Literal["hog", "cnn"] | None = None
    upsample: int | None = Field(default=None, ge=0, le=4)
    cache: Literal["memory", "disk", "none"] = "memory"
    mixed_precision: Literal["auto"] | bool = "auto"
    distribute: Literal["auto", "mirrored", "none"] = "auto"
    width: int = Field(default=64, ge=8, le=512)
    early_stopping_patience: int | None = Field(default=None, ge=1)
    test_time_flip: bool = False

    @model_validator(mode="before")
    @classmethod
    def _default_pretrained(cls, data: Any) -> Any:
        return cls.with_default_pretrained(data)

    @staticmethod
    def with_default_pretrained(data: Any) -> Any:
        """``data`` with ``pretrained: "dlib"`` for a ``face_resnet`` that names no weights."""
        if isinstance(data, dict) and "pretrained" not in data and data.get("arch_type") == "face_resnet":
            return {**data, "pretrained": "dlib"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        problems = broken_rules(self)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def split_seed_or_seed(self) -> int:
        """The seed of the ID split: ``split_seed`` when set (ensemble members share a split), else ``seed``."""
        return self.seed if self.split_seed is None else self.split_seed

    @property
    def model_name(self) -> str:
        """``{model_prefix}{arch_type}{arch_subtype}``, e.g. ``coral_resnet50``."""
        return f"{self.model_prefix}{self.arch_type}{self.arch_subtype}"


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> dict; VALUE is parsed as JSON, falling back to the raw string."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def _resolve(value: Any, base: Path) -> Any:
    if isinstance(value, str) and value and value not in PRETRAINED_NAMES and not Path(value).is_absolute():
        return str(base / value)
    return value


def _unknown_key(key: str) -> str:
    close = difflib.get_close_matches(key.removeprefix("--set "), TrainConfig.model_fields, n=1)
    return f"{key}: unknown key" + (f" (did you mean {close[0]}?)" if close else "")


def _describe(error: ErrorDetails) -> list[str]:
    """One pydantic error as ``key: what is wrong (got VALUE)``; ``_consistent``'s joined problems come apart."""
    loc = ".".join(str(part) for part in error["loc"])
    msg = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return [_unknown_key(loc)]
    if not loc and ":" in msg:
        return msg.split("; ")
    got = error.get("input")
    shown = json.dumps(got) if isinstance(got, str | int | float | bool) else type(got).__name__
    return [f"{loc}: {msg} (got {shown})"]


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read, override and validate a training config; check that its data paths exist.

    Args:
        path: the JSON file (an object of the keys of :class:`TrainConfig`).
        overrides: values that replace the file's (typically from ``--set``); relative paths against the cwd.
    Returns:
        the validated config with absolute paths; ``run_dir`` still holds its ``{timestamp}``-style fields.
    Raises:
        ConfigError: naming the file and every problem with its key, for unknown keys, wrong types, impossible
            values and data paths that do not exist (all in one message), or for unreadable JSON.
    """
    path = Path(path)
    where = f"config {path}"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{where}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a JSON object of keys")
    base = path.resolve().parent
    data = {k: _resolve(v, base) if k in PATH_KEYS else v for k, v in raw.items()}
    problems = []
    for key, value in (overrides or {}).items():
        if key in TrainConfig.model_fields:
            data[key] = _resolve(value, Path.cwd()) if key in PATH_KEYS else value
        else:
            problems.append(_unknown_key(f"--set {key}"))
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        problems += [problem for error in exc.errors() for problem in _describe(error)]
        problems += _cross_key_problems(data, exc.errors())
    problems += _missing_paths(data)
    if problems:
        raise ConfigError(_summary(where, problems))
    _check_chip_size(config, where)
    return config.model_copy(update={k: getattr(config, k).resolve() for k in PATH_KEYS if k != "pretrained"})


def _cross_key_problems(data: dict[str, Any], errors: list[ErrorDetails]) -> list[str]:
    """The rules between keys that the valid keys of a failed config break.

    Pydantic skips ``TrainConfig``'s cross-key check when any key fails on its own, so without this an
    ``arch_subtype`` that does not fit ``arch_type`` would show only after every typo is fixed. The keys that failed
    are left out, and the rules that read them skipped.
    """
    if any(not error["loc"] for error in errors):  # the cross-key check ran: its problems are among the errors
        return []
    failed = {error["loc"][0] for error in errors}
    valid = {key: value for key, value in data.items() if key in TrainConfig.model_fields and key not in failed}
    partial = TrainConfig.model_construct(**TrainConfig.with_default_pretrained(valid))
    for key in failed:  # absent rather than defaulted: a rule reading it is skipped, not misled
        partial.__dict__.pop(key, None)
    return broken_rules(partial)


def _missing_paths(data: dict[str, Any]) -> list[str]:
    """The data paths of a (possibly invalid) config that do not exist, so that they are reported with the rest."""
    problems = []
    img_dir, csv_path, pretrained = data.get("img_dir"), data.get("csv_path"), data.get("pretrained")
    if isinstance(img_dir, str) and not Path(img_dir).is_dir():
        problems.append(f"img_dir: folder not found: {img_dir}")
    if isinstance(csv_path, str) and not Path(csv_path).is_file():
        problems.append(f"csv_path: file not found: {csv_path}")
    if isinstance(pretrained, str) and pretrained not in ("", *PRETRAINED_NAMES) and not Path(pretrained).is_file():
        problems.append(f"pretrained: weights file not found: {pretrained}")
    return problems


def _summary(where: str, problems: list[str]) -> str:
    """One message for every problem: each names its key; unknown keys end with the list of valid ones."""
    text = f"{where}: " + (problems[0] if len(problems) == 1 else f"{len(problems)} problems: " + "; ".join(problems))
    if any("unknown key" in problem for problem in problems):
        text += f" (valid keys: {', '.join(TrainConfig.model_fields)})"
    return text


def align_record(csv_path: Path) -> dict[str, Any]:
    """The ``align.json`` that ``age-align`` wrote beside ``csv_path``; empty when absent or unreadable."""
    try:
        record = json.loads((csv_path.parent / "align.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _check_chip_size(config: TrainConfig, where: str) -> None:
    """Train on chips exactly as the service cuts them: ``img_size`` must be the side ``age-align`` cut them at.

    The service cuts chips at the model's ``img_size`` straight from the photo; chips cut larger and resized in
    training would be softer and framed by different rounding than anything the model later sees.
    """
    size = align_record(config.csv_path).get("img_size")
    if isinstance(size, int) and size != config.img_size:
        raise ConfigError(
            f"{where}: img_size: {config.img_size}, but age-align cut the chips of {config.csv_path} at {size} px "
            f"(align.json); set img_size to {size} or re-align with --img-size {config.img_size}, so that training "
            "sees the chips the service will cut"
        )


def resolve_alignment(config: TrainConfig) -> dict[str, Any]:
    """How the chips were cut: ``chip_padding``, ``detector``, ``upsample`` for the model's metadata.

    Each comes from the config when set there, else from the ``align.json`` that ``age-align`` wrote beside the
    CSV, else the defaults (0.4, ``"hog"``, 0). Consumers of the model align faces with these values.
    """
    record = align_record(config.csv_path)
    padding = record.get("padding")
    detector = record.get("detector")
    upsample = record.get("upsample")
    return {
        "chip_padding": config.chip_padding
        if config.chip_padding is not None
        else (float(padding) if isinstance(padding, int | float) else DEFAULT_CHIP_PADDING),
        "detector": config.detector or (detector if detector in ("hog", "cnn") else "hog"),
        "upsample": config.upsample
        if config.upsample is not None
        else (upsample if isinstance(upsample, int) and upsample >= 0 else 0),
    }
