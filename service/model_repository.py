"""Which model file to serve, what the loaded model is called, and which newer version to load next.

Two sources: the one file of ``--model``/``MODEL_PATH``/the predict config, or ``MODEL_REPOSITORY=DIR`` in TF
Serving's layout, numbered version folders ``DIR/<n>/model.h5`` of which the highest ``n`` is served. The
repository, when set, wins: the serving image sets ``MODEL_PATH`` for its baked-in model, which a deployment cannot
unset. A model's id, ``<name>[:<version>]@sha256:<12 hex>`` (e.g. ``age:2@sha256:3f1c2a9b8e7d``), is computed
once, from the file that was loaded, and never from the disk afterwards: replacing the file changes nothing until
it is loaded.

A version that cannot be served (unreadable, metadata disagreeing with the predict config, a Keras load error) is
logged and remembered with the file's stamp (inode, size, modification time), so it is not retried until the file
changes; the model serving keeps serving.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from core.artifact import file_sha256, model_id, read_metadata
from core.errors import ConfigError, ModelFileError
from service.settings import ModelChoice, ServiceSettings, check_agreement, load_predict_config

logger = logging.getLogger(__name__)

VERSION_FILE = "model.h5"
"""The model file inside each version folder of ``MODEL_REPOSITORY``."""

Stamp = tuple[int, int, int]
"""``(inode, size, mtime_ns)`` of a file: a renamed-over or rewritten file gets a new one."""

P = TypeVar("P")


def stamp_of(path: Path) -> Stamp:
    """The file's current stamp."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@dataclass(frozen=True)
class ModelIdentity:
    """The model actually loaded: its name, repository version (``None`` for a single file), the SHA-256 of the
    loaded file's bytes, its path and size, and the file's stamp when it was hashed."""

    name: str
    version: int | None
    sha256: str
    file: Path
    bytes: int
    stamp: Stamp

    @property
    def id(self) -> str:
        """``name[:version]@sha256:<first 12 hex digits>``, the ``model_id`` of every answer."""
        return model_id(self.name, self.sha256, self.version)

    @classmethod
    def of(cls, choice: ModelChoice) -> ModelIdentity:
        """Hash the chosen file now; call before loading it and :meth:`check_unchanged` after."""
        path = Path(choice.model_file)
        stamp = stamp_of(path)
        sha256 = file_sha256(path)
        identity = cls(choice.name or path.stem, choice.version, sha256, path, stamp[1], stamp)
        identity.check_unchanged()
        return identity

    def check_unchanged(self) -> None:
        """Raise ``ModelFileError`` if the file was replaced or rewritten since it was hashed (the weights loaded
        might then not be the ones hashed)."""
        try:
            unchanged = stamp_of(self.file) == self.stamp
        except OSError:
            unchanged = False
        if not unchanged:
            raise ModelFileError(f"{self.file}: the file changed while it was being loaded; it is read again next time")


@dataclass(frozen=True)
class ModelVersion:
    """One model file on disk that could be served: its version (``None`` for a single file) and stamp."""

    version: int | None
    path: Path
    stamp: Stamp


def chip_geometry(metadata: dict[str, Any]) -> tuple[int, float, str, int]:
    """How a model's face chips are cut (as ``FaceAligner.from_metadata`` reads it): size, padding, detector,
    upsampling. The detection threads' aligners are built for one geometry, so a new version must keep it."""
    detector, upsample = metadata.get("detector"), metadata.get("upsample")
    return (
        int(metadata["img_size"]),
        float(metadata["chip_padding"]),
        "hog" if detector is None else str(detector),
        0 if upsample is None else int(upsample),
    )


class ModelSource:
    """The model files the settings point at, newest first, and the choice among them (see the module docstring).

    ``skipped`` maps a version (``None``: the single file) to the stamp of the file that failed and the reason.
    """

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.repository = settings.model_repository
        self.skipped: dict[int | None, tuple[Stamp, str]] = {}
        self.failures = 0
        """How many loads failed so far (a version retried after its file changed counts again)."""
        self.last_error: Exception | None = None

    @property
    def name(self) -> str:
        """The repository folder's name; for a single file, its stem."""
        return self.repository.resolve().name if self.repository is not None else self.single_file().stem

    def single_file(self) -> Path:
        """The ``.h5`` without a repository: ``MODEL_PATH``/``--model``, else the predict config's ``model_path``."""
        settings = self.settings
        if settings.model_path is not None:
            return Path(settings.model_path)
        return load_predict_config(settings.predict_config).resolve_model_path(settings.predict_config)

    def versions(self) -> list[ModelVersion]:
        """Every candidate file, newest version first; ``ConfigError`` for an unusable ``MODEL_REPOSITORY``."""
        if self.repository is None:
            path = self.single_file()
            try:
                return [ModelVersion(None, path, stamp_of(path))]
            except OSError:
                # read_metadata names the missing file in the error the caller reports.
                return [ModelVersion(None, path, (0, 0, 0))]
        try:
            entries = list(self.repository.iterdir())
        except OSError as exc:
            raise ConfigError(f"MODEL_REPOSITORY {self.repository}: cannot list it ({exc.strerror or exc})") from None
        found = []
        for entry in entries:
            # Only all-digit names: a folder being copied in as "3.tmp" or ".3" is not a version yet.
            if re.fullmatch(r"[0-9]+", entry.name):
                try:
                    found.append(ModelVersion(int(entry.name), entry / VERSION_FILE, stamp_of(entry / VERSION_FILE)))
                except OSError:
                    continue
        return sorted(found, key=lambda candidate: candidate.version or 0, reverse=True)

    def choose(self, candidate: ModelVersion) -> ModelChoice:
        """Read the candidate's metadata (h5py only) and check it against the predict config."""
        config_file = self.settings.predict_config
        config = load_predict_config(config_file)
        metadata = read_metadata(candidate.path)
        check_agreement(config, config_file, metadata, candidate.path)
        return ModelChoice(config, config_file, candidate.path, metadata, self.name, candidate.version)

    def preflight(self) -> ModelChoice:
        """What ``age-serve`` checks before starting: the newest candidate whose metadata is usable.

        Raises ``ConfigError``/``ModelFileError`` naming the file when none is (the newest one's error).
        """
        candidates = self.versions()
        if not candidates:
            raise ConfigError(f"MODEL_REPOSITORY {self.repository}: no version folder <n>/{VERSION_FILE} in it")
        first_error: Exception | None = None
        for candidate in candidates:
            try:
                return self.choose(candidate)
            except (ConfigError, ModelFileError) as exc:
                first_error = first_error or exc
        assert first_error is not None
        raise first_error

    def pick(self, current: ModelIdentity | None, load: Callable[[ModelChoice], P]) -> P | None:
        """Load the newest candidate that is not the current model nor known broken; ``None`` if there is none.

        Blocking (reads and loads files). Candidates are tried newest first: a broken one is recorded in
        ``skipped`` and the next older one tried, down to the current version (a rollback happens only when the
        current version's folder was removed). Any exception of ``load`` counts as broken, never escapes.
        """
        for candidate in self.versions():
            is_current_version = current is not None and candidate.version == current.version
            if is_current_version and current is not None and candidate.stamp == current.stamp:
                return None
            known = self.skipped.get(candidate.version)
            if known is None or known[0] != candidate.stamp:
                try:
                    return load(self.choose(candidate))
                except Exception as exc:
                    self._skip(candidate, exc)
            if is_current_version:
                return None
        return None

    def _skip(self, candidate: ModelVersion, exc: Exception) -> None:
        reason = " ".join(f"{exc}".split()) or type(exc).__name__
        self.skipped[candidate.version] = (candidate.stamp, reason)
        self.failures += 1
        self.last_error = exc
        which = "the model file" if candidate.version is None else f"model version {candidate.version}"
        logger.error("%s cannot be served and is skipped until its file changes: %s", which, reason)

    def load_first(self, load: Callable[[ModelChoice], P]) -> P:
        """Start-up: the newest loadable candidate; raise the reason when none loads."""
        if self.repository is not None and self.settings.model_path is not None:
            logger.warning("MODEL_REPOSITORY %s is served; MODEL_PATH (--model) is not used", self.repository)
        loaded = self.pick(None, load)
        if loaded is None:
            if self.last_error is not None:
                raise self.last_error
            raise ConfigError(f"MODEL_REPOSITORY {self.repository}: no version folder <n>/{VERSION_FILE} in it")
        return loaded
