"""The model side of inference, shared by ``age-serve`` and ``age-demo``: load once, run chips, build the body.

Face chips go in as ``uint8`` ``(N, img_size, img_size, 3)`` RGB (the model scales pixels itself); CORAL logits
come out as ``(N, K-1)`` from a ``core.engine.Engine`` (the runtime and precision ``MODEL_RUNTIME`` and
``MODEL_PRECISION`` choose, by default the fastest accurate one for the machine), and :meth:`Predictor.response`
turns them into the ``POST /predict`` body. TensorFlow is imported only when the engine needs it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from core.calibration import Calibration
from core.engine import Engine, TensorFlowEngine, load_engine
from service.answers import build_answer, full_faces
from service.model_repository import ModelIdentity
from service.options import AnswerOptions
from service.schemas import Answer, FacePrediction
from service.settings import ModelChoice, ServiceSettings

if TYPE_CHECKING:
    import keras


class Predictor:
    """A loaded CORAL model plus what is needed to decode its output.

    Args:
        model: the forward pass: a ``core.engine.Engine``, or a Keras model (input ``(None, S, S, 3)`` float pixels
            0..255, output ``(None, K-1)`` logits) run by TensorFlow in float32.
        metadata: the model file's metadata (``start_label``, ``num_classes``, ``img_size``, ...).
        threshold: default decision threshold in (0, 1) (the predict config's, which overrides the model's).
        device: where the model runs, for ``GET /health``, e.g. ``"CPU"``.
        max_interval_width: faces whose ``age_interval`` is wider (years, ``high - low``) are ``uncertain``.
        identity: the loaded file's identity (``load_predictor`` computes it); ``model_id`` is its id.
    """

    def __init__(
        self,
        model: Engine | keras.Model,
        metadata: dict[str, Any],
        threshold: float,
        device: str,
        max_interval_width: float | None = None,
        identity: ModelIdentity | None = None,
    ) -> None:
        self.identity = identity
        self.model_id = identity.id if identity is not None else "unidentified"
        self.metadata = dict(metadata)
        self.calibration = Calibration.from_metadata(metadata)
        self.max_interval_width = max_interval_width
        self.threshold = float(threshold)
        self.device = device
        self.start_label = int(metadata["start_label"])
        self.num_classes = int(metadata["num_classes"])
        self.img_size = int(metadata["img_size"])
        self.engine = model if isinstance(model, Engine) else TensorFlowEngine(model)

    @property
    def engine_summary(self) -> dict[str, str]:
        """How the forward pass runs, for ``GET /health`` and ``GET /model``: ``runtime`` and ``precision``."""
        return {"runtime": self.engine.runtime, "precision": self.engine.precision}

    def logits(self, chips: np.ndarray) -> np.ndarray:
        """CORAL logits ``(N, K-1)`` float32 of the chips ``(N, S, S, 3)`` uint8 RGB."""
        return self.engine.logits(chips)

    def warm_up(self) -> None:
        """Trace and run the model once, so that the first request does not pay for it."""
        self.logits(np.zeros((1, self.img_size, self.img_size, 3), dtype=np.uint8))

    def faces(
        self, boxes: Sequence[Sequence[int]], logits: np.ndarray, options: AnswerOptions | None = None
    ) -> list[FacePrediction]:
        """One full ``FacePrediction`` per row of ``logits`` ``(N, K-1)``, with ``boxes[i]`` as its box."""
        return full_faces(self, boxes, logits, options or AnswerOptions())

    def response(
        self, boxes: Sequence[Sequence[int]], logits: np.ndarray, options: AnswerOptions | None = None
    ) -> Answer:
        """The ``POST /predict`` body for faces ordered largest first, in the view of ``options`` (default full: the
        first face's fields, ``model_id`` and ``faces``); see ``service.answers``."""
        return build_answer(self, boxes, logits, options or AnswerOptions())


def load_predictor(
    choice: ModelChoice,
    max_interval_width: float | None = None,
    precision: str = "auto",
    threads: int = 1,
    runtime: str = "auto",
    cache_dir: Path | None = None,
) -> Predictor:
    """Load the chosen model once and warm it up; ``ModelFileError`` when the file cannot be loaded.

    The file is hashed before it is loaded, and refused if it changed meanwhile, so ``predictor.model_id`` names
    exactly the weights loaded. ``precision``, ``runtime``, ``threads`` (per model call) and ``cache_dir`` (for
    converted ONNX files) go to :func:`core.engine.load_engine`.
    """
    identity = ModelIdentity.of(choice)
    engine = load_engine(choice.model_file, runtime, precision, threads, cache_dir)
    identity.check_unchanged()
    predictor = Predictor(engine, choice.metadata, choice.config.threshold, engine.device, max_interval_width, identity)
    predictor.warm_up()
    return predictor


def settings_loader(settings: ServiceSettings) -> Callable[[ModelChoice], Predictor]:
    """``load_predictor`` with the engine settings of ``settings`` (``MODEL_PRECISION``, ``MODEL_RUNTIME``, ...)."""
    return functools.partial(
        load_predictor,
        max_interval_width=settings.max_interval_width,
        precision=settings.model_precision,
        threads=settings.model_threads,
        runtime=settings.model_runtime,
        cache_dir=settings.model_cache_dir,
    )
