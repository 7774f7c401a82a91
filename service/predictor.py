"""The model side of inference, shared by ``age-serve`` and ``age-demo``: load once, run chips, build the body.

Face chips go in as ``uint8`` ``(N, img_size, img_size, 3)`` RGB (the model scales pixels itself); CORAL logits
come out as ``(N, K-1)``, and :meth:`Predictor.response` turns them into the ``POST /predict`` body.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from core.artifact import load_model
from core.distribution import Calibration
from core.fold import fold_affine
from service.answers import build_answer, full_faces
from service.model_repository import ModelIdentity
from service.options import AnswerOptions
from service.schemas import Answer, FacePrediction
from service.settings import ModelChoice

if TYPE_CHECKING:
    import keras


class Predictor:
    """A loaded CORAL model plus what is needed to decode its output.

    Args:
        model: Keras model, input ``(None, S, S, 3)`` float pixels 0..255, output ``(None, K-1)`` logits.
        metadata: the model file's metadata (``start_label``, ``num_classes``, ``img_size``, ...).
        threshold: default decision threshold in (0, 1) (the predict config's, which overrides the model's).
        device: where the model runs, for ``GET /health``, e.g. ``"CPU"``.
        max_interval_width: faces whose ``age_interval`` is wider (years, ``high - low``) are ``uncertain``.
        identity: the loaded file's identity (``load_predictor`` computes it); ``model_id`` is its id.
    """

    def __init__(
        self,
        model: keras.Model,
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
        size = self.img_size
        # One trace for every batch size: the micro-batcher produces all sizes from 1 to its maximum.
        self._forward = tf.function(
            lambda chips: model(tf.cast(chips, tf.float32), training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
        )

    def logits(self, chips: np.ndarray) -> np.ndarray:
        """CORAL logits ``(N, K-1)`` float32 of the chips ``(N, S, S, 3)`` uint8 RGB."""
        if len(chips) == 0:
            return np.zeros((0, self.num_classes - 1), dtype=np.float32)
        return np.asarray(self._forward(tf.convert_to_tensor(chips, dtype=tf.uint8)), dtype=np.float32)

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


def configure_device(threads: int = 0) -> str:
    """Let TensorFlow grow GPU memory as needed (before it initialises the GPU) and run each op on ``threads``
    threads (0: TensorFlow's default, one per core); name the device used."""
    if threads > 0:
        # RuntimeError: TensorFlow already ran an op in this process (a second app, a test); its pools are fixed.
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # RuntimeError: the GPU was initialised earlier in this process (a second app); the setting is fixed then.
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"GPU ({details.get('device_name', gpus[0].name)})"


def load_predictor(
    choice: ModelChoice, max_interval_width: float | None = None, precision: str = "float32", threads: int = 0
) -> Predictor:
    """Load the chosen model once and warm it up; ``ModelFileError`` when the file cannot be loaded.

    The file is hashed before it is loaded, and refused if it changed meanwhile, so ``predictor.model_id`` names
    exactly the weights loaded.

    ``precision="bfloat16"`` lets oneDNN run the forward pass in bfloat16 (a process-wide graph rewrite);
    ``threads`` as in :func:`configure_device`.
    """
    device = configure_device(threads)
    if precision == "bfloat16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    # Folding each Affine into its convolution is exact and saves ~15% of a face_resnet forward pass.
    identity = ModelIdentity.of(choice)
    model = fold_affine(load_model(choice.model_file))
    identity.check_unchanged()
    predictor = Predictor(model, choice.metadata, choice.config.threshold, device, max_interval_width, identity)
    predictor.warm_up()
    return predictor
