"""The service's configuration: environment variables (pydantic-settings) and ``predict_config.json`` (pydantic).

Both fail fast: a wrong type, an unknown key or an impossible value raises ``ConfigError`` with one line that names
the key and where it came from, before any model is loaded. ``check_agreement`` then refuses a predict config that
disagrees with the model file's own metadata, since serving such a pair would decode ages on the wrong scale.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FilePath,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from core.artifact import read_metadata
from core.errors import ConfigError
from core.image import DEFAULT_MAX_PIXELS

DEFAULT_PREDICT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "predict_config.json"
"""The repository's ``configs/predict_config.json``, found from the package so the CWD does not matter."""


class ServiceSettings(BaseSettings):
    """Environment variables read by ``age-serve`` (and, for the paths, ``age-demo``); names are upper case."""

    model_config = SettingsConfigDict(extra="ignore", frozen=True, protected_namespaces=())

    model_path: Path | None = Field(
        default=None, description="the .h5 to serve; overrides model_path of the predict config"
    )
    predict_config: Path = Field(default=DEFAULT_PREDICT_CONFIG, description="the predict_config.json to use")
    max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0, description="largest accepted upload, bytes")
    max_pixels: int = Field(default=DEFAULT_MAX_PIXELS, gt=0, description="largest accepted width x height")
    # 100 like Amazon Rekognition's DetectFaces: a team or class photo (bald_guys.jpg: 23 found) keeps every face,
    # while the cut, made before landmarks and chips, still bounds the work a crowd photo can cause.
    max_faces: int = Field(default=100, gt=0, description="faces analysed per image, largest first")
    batch_max_size: int = Field(default=32, gt=0, description="faces per model call at most")
    batch_max_wait_ms: float = Field(default=5.0, ge=0, description="how long a batch waits to fill, ms")
    # 1.5x FaceAligner's 1024-px search copy: the smallest face HOG finds there is still >= 120 px in the decoded copy,
    # about twice the 64-px chip, so reducing loses no chip detail while a 4000x3000 JPEG decodes at 1/2 scale.
    decode_side: int = Field(default=1536, ge=256, description="photos are decoded reduced to at least this side")
    head_timeout_s: float = Field(default=10.0, gt=0, description="time a connection has to send a request head, s")
    body_timeout_s: float = Field(default=60.0, gt=0, description="time a request body has to arrive, s")
    keep_alive_s: float = Field(default=5.0, gt=0, description="idle time before a kept-alive connection closes, s")
    max_connections: int = Field(default=4096, gt=0, description="open connections at most; more are closed")
    shutdown_timeout_s: float = Field(default=8.0, ge=0, description="wait for requests in flight on SIGTERM, s")
    detect_workers: int = Field(default_factory=lambda: os.cpu_count() or 1, gt=0, description="face-detection threads")
    max_batch_files: int = Field(default=32, gt=0, description="images per POST /predict/batch at most")
    # Limits against hostile uploads (issue 20); docs/serving.md, "Limits and hardening", says what each bounds.
    max_jpeg_scans: int = Field(default=100, gt=0, description="scans (SOS markers) of a JPEG at most")
    decode_timeout_s: float = Field(default=4.0, gt=0, description="CPU budget of one decode, s; then it is killed")
    max_inflight_bytes: int = Field(default=512 * 2**20, gt=0, description="request body bytes held at once")
    max_inflight_pixels: int = Field(default=120_000_000, gt=0, description="pixels being decoded at once")
    max_header_count: int = Field(default=100, gt=0, description="request header fields at most")
    max_header_bytes: int = Field(default=32 * 1024, gt=0, description="request line and headers, bytes at most")
    max_json_depth: int = Field(default=16, gt=0, description="nesting of a JSON body at most")
    max_json_number_chars: int = Field(default=32, gt=0, description="characters of one JSON number at most")
    malloc_arena_max: int = Field(default=2, ge=0, description="glibc malloc arenas; 0: glibc's defaults")
    memory_trim_s: float = Field(default=2.0, gt=0, description="idle seconds before freed memory is returned")
    max_interval_width: float | None = Field(
        default=None, gt=0, description="faces whose age_interval is wider (high - low, years) are marked uncertain"
    )
    # One thread: the detection threads keep the other cores busy, and a lone thread does not spin waiting for
    # its partners (on 2 cores: less CPU per photo at 1 and at 8 clients than TensorFlow's one thread per core).
    model_threads: int = Field(default=1, ge=0, description="threads per model call; 0: one per core")
    # auto: int8 (onnxruntime) where the CPU has VNNI and the model's precision report accepted it on the held-out
    # photos, else float32 (onnxruntime on a CPU, TensorFlow on a GPU); see core/engine.py and docs/serving.md.
    model_precision: Literal["auto", "float32", "bfloat16", "int8"] = Field(
        default="auto", description="the forward pass's arithmetic: auto, float32, bfloat16 (TensorFlow) or int8"
    )
    model_runtime: Literal["auto", "tensorflow", "onnxruntime"] = Field(
        default="auto", description="what runs the forward pass: auto, tensorflow or onnxruntime"
    )
    model_cache_dir: Path | None = Field(
        default=None, description="where converted ONNX files are kept (default ~/.cache/age-estimation)"
    )
    # TF Serving's layout: numbered version folders, the highest served; a new one is loaded beside the current one.
    model_repository: Path | None = Field(
        default=None, description="folder of versions DIR/<n>/model.h5, the highest n served; wins over MODEL_PATH"
    )
    model_poll_seconds: float | None = Field(
        default=None, gt=0, description="look for a newer model this often, s (default: only on SIGHUP)"
    )
    # The edge of the service: who may call it, from which pages, and how its answers and logs look.
    api_keys: SecretStr | None = Field(
        default=None, description="comma-separated API keys; when set, all but the probes and the page need one"
    )
    api_keys_file: FilePath | None = Field(
        default=None, description="file of API keys, one per line ('#' starts a comment); with or without API_KEYS"
    )
    metrics_require_key: bool = Field(default=True, description="with API keys, GET /metrics needs one too")
    cors_origins: Annotated[tuple[str, ...], NoDecode] = Field(
        default=(), description="comma-separated origins whose pages may call the API ('*': any)"
    )
    log_format: Literal["text", "json"] = Field(default="text", description="log lines as text, or a JSON object each")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value


def load_settings(**overrides: Any) -> ServiceSettings:
    """Read the environment (``overrides`` win, e.g. from command-line flags); raise ``ConfigError`` if invalid."""
    try:
        return ServiceSettings(**{key: value for key, value in overrides.items() if value is not None})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]).upper() if error["loc"] else "?"
        raise ConfigError(f"environment variable {key}: {error['msg']} (got {error.get('input')!r})") from None


class PredictConfig(BaseModel):
    """``predict_config.json``: what the served model is expected to be, and the decision threshold.

    Labels are ages in years: rank ``r`` in ``0..n_classes-1`` means age ``start_label + r``, so ``end_label`` must
    equal ``start_label + n_classes - 1``. ``model_path`` is relative to the config file's folder unless absolute.
    """

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())

    n_classes: int = Field(ge=2)
    start_label: int = Field(ge=0)
    end_label: int
    img_size: int = Field(gt=0)
    threshold: float = Field(gt=0.0, lt=1.0)
    model_path: str = Field(min_length=1)

    @model_validator(mode="after")
    def _labels_span_the_classes(self) -> PredictConfig:
        expected = self.start_label + self.n_classes - 1
        if self.end_label != expected:
            raise ValueError(f"end_label: {self.end_label} disagrees with start_label + n_classes - 1 = {expected}")
        return self

    def resolve_model_path(self, config_file: Path) -> Path:
        """``model_path`` as a path usable from the current directory."""
        path = Path(self.model_path)
        return path if path.is_absolute() else (config_file.parent / path).resolve()


def load_predict_config(path: Path) -> PredictConfig:
    """Parse and validate ``path``; raise ``ConfigError`` with one line naming the file and the key."""
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the predict config: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the predict config must be a JSON object")
    try:
        return PredictConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc.errors()[0])}") from None


def _describe(error: Any) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"unknown key '{key}'; expected only {', '.join(PredictConfig.model_fields)}"
    if error["type"] == "missing":
        return f"missing key '{key}'"
    if not key:
        # Model-level checks put the key name first in their message.
        return str(error["msg"]).removeprefix("Value error, ")
    return f"key '{key}': {error['msg']} (got {error.get('input')!r})"


def check_agreement(config: PredictConfig, config_file: Path, metadata: dict[str, Any], model_file: Path) -> None:
    """Raise ``ConfigError`` if the predict config and the model's metadata describe different label scales."""
    num_classes = int(metadata["num_classes"])
    start_label = int(metadata["start_label"])
    pairs = [
        ("n_classes", config.n_classes, "num_classes", num_classes),
        ("start_label", config.start_label, "start_label", start_label),
        ("img_size", config.img_size, "img_size", int(metadata["img_size"])),
        ("end_label", config.end_label, "end_label", int(metadata.get("end_label", start_label + num_classes - 1))),
    ]
    for key, ours, their_key, theirs in pairs:
        if ours != theirs:
            raise ConfigError(
                f"{config_file}: {key} is {ours} but the model {model_file} has {their_key} {theirs}; "
                "make the predict config match the model"
            )


@dataclass(frozen=True)
class ModelChoice:
    """The model to serve and the predict config it was checked against."""

    config: PredictConfig
    config_file: Path
    model_file: Path
    metadata: dict[str, Any]
    name: str = ""
    """What the model is called in its id: the repository folder's name, else the file's stem."""
    version: int | None = None
    """The repository version folder's number; ``None`` for a single file."""


def choose_model(settings: ServiceSettings) -> ModelChoice:
    """Read the predict config and the model's metadata (h5py only, no TensorFlow) and check they agree.

    The model is ``settings.model_path`` when set, else the config's ``model_path``. Raises ``ConfigError`` or
    ``ModelFileError`` with one line naming the file and, for config errors, the key.
    """
    config = load_predict_config(settings.predict_config)
    model_file = settings.model_path or config.resolve_model_path(settings.predict_config)
    metadata = read_metadata(model_file)
    check_agreement(config, settings.predict_config, metadata, model_file)
    return ModelChoice(config, settings.predict_config, model_file, metadata)
