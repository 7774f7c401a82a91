"""The forward pass as an engine: one model file run by one runtime at one precision, chosen from what the machine has.

An :class:`Engine` maps face chips ``uint8`` ``(N, S, S, 3)`` RGB to CORAL logits ``float32`` ``(N, K-1)``; the
service, ``age-demo``, ``age-evaluate`` and the batch path all call :func:`load_engine`, so they run the same
arithmetic for the same settings. Runtimes and precisions:

- ``onnxruntime`` ``float32``: the ``.h5`` converted to ONNX once and cached by its sha256 (``core.onnx_export``).
- ``onnxruntime`` ``int8``: post-training static quantisation, calibrated on training chips and scored on the
  held-out photos by ``bench/precision.py``, which writes ``<stem>.int8.onnx`` and ``<stem>.precision.json`` beside
  the ``.h5`` (``core.precision``).
- ``tensorflow`` ``float32`` / ``bfloat16`` (oneDNN's automatic bfloat16 rewrite, process-wide).

``auto`` (the default of both settings) picks, on a CPU: int8 when the CPU has 8-bit dot products (VNNI/AMX) and the
model's precision report accepted it; else onnxruntime float32, which costs less than TensorFlow's float32 at every
batch size measured (``bench/RESULTS.md``). A GPU keeps TensorFlow float32.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from core.errors import ModelFileError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

Runtime = Literal["tensorflow", "onnxruntime"]
Precision = Literal["float32", "bfloat16", "int8"]
RUNTIMES: tuple[str, ...] = ("auto", "tensorflow", "onnxruntime")
PRECISIONS: tuple[str, ...] = ("auto", "float32", "bfloat16", "int8")
INT8_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
"""CPU flags of 8-bit dot-product instructions: without them int8 convolutions gain little over float32."""
BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


class Engine:
    """A loaded network: :meth:`logits` of uint8 chips; ``runtime``, ``precision`` and ``device`` say how it runs."""

    runtime: Runtime
    precision: Precision
    img_size: int
    device: str = "CPU"
    """``"CPU"`` or ``"GPU (<name>)"``, as ``GET /health`` reports it."""

    @property
    def name(self) -> str:
        """``"<runtime> <precision>"``, as ``GET /health`` and ``GET /model`` report it."""
        return f"{self.runtime} {self.precision}"

    _outputs: int

    def logits(self, chips: np.ndarray) -> np.ndarray:
        """CORAL logits ``(N, K-1)`` float32 of the chips ``(N, S, S, 3)`` uint8 RGB (any N >= 0)."""
        raise NotImplementedError

    @property
    def output_shape(self) -> tuple[None, int]:
        """``(None, K-1)``, as a Keras model's."""
        return (None, self._outputs)

    def predict_on_batch(self, images: object) -> np.ndarray:
        """Keras' name for :meth:`logits`, so that evaluation code written for a Keras model runs an engine: float
        pixels 0..255 (a ``tf.data`` batch, say) are rounded to uint8, exactly for chips read from 8-bit files."""
        chips = np.asarray(images)
        if chips.dtype != np.uint8:
            chips = np.clip(np.rint(chips), 0, 255).astype(np.uint8)
        return self.logits(chips)


class TensorFlowEngine(Engine):
    """A Keras model run by TensorFlow, traced once for every batch size (the batcher makes all of 1..max)."""

    runtime: Runtime = "tensorflow"

    def __init__(self, model: keras.Model, precision: Precision = "float32") -> None:
        import tensorflow as tf

        self.precision = precision
        self.img_size = int(model.input_shape[1])
        self._outputs = int(model.output_shape[-1])
        size = self.img_size
        self._tf = tf
        self._forward = tf.function(
            lambda chips: model(tf.cast(chips, tf.float32), training=False),
            input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8)],
        )

    def logits(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self._outputs), dtype=np.float32)
        return np.asarray(self._forward(self._tf.convert_to_tensor(chips, dtype=self._tf.uint8)), dtype=np.float32)


def session_options(threads: int) -> object:
    """onnxruntime session options for ``threads`` threads per call (0: one per core), no spinning between calls."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # A waiting pool thread spins by default, burning a core the detection threads need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


class OnnxEngine(Engine):
    """An ONNX file (input ``chips`` uint8, output ``logits``) run by onnxruntime on the CPU."""

    runtime: Runtime = "onnxruntime"

    def __init__(self, path: str | os.PathLike[str], precision: Precision = "float32", threads: int = 1) -> None:
        import onnxruntime

        self.precision = precision
        self.path = Path(path)
        try:
            self._session = onnxruntime.InferenceSession(
                str(path), session_options(threads), providers=["CPUExecutionProvider"]
            )
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph types, not importable by name
            raise ModelFileError(f"{path}: onnxruntime cannot load it: {exc}") from exc
        (chips,) = self._session.get_inputs()
        (logits,) = self._session.get_outputs()
        self._input, self._output = chips.name, logits.name
        self.img_size = int(chips.shape[1])
        self._outputs = int(logits.shape[1])

    def logits(self, chips: np.ndarray) -> np.ndarray:
        if len(chips) == 0:
            return np.zeros((0, self._outputs), dtype=np.float32)
        (out,) = self._session.run([self._output], {self._input: np.ascontiguousarray(chips, dtype=np.uint8)})
        return np.asarray(out, dtype=np.float32)


@dataclass(frozen=True)
class EngineChoice:
    """What to run: ``runtime``, ``precision`` and, for int8, the quantised file; ``why`` in words for the log."""

    runtime: Runtime
    precision: Precision
    why: str
    int8_file: Path | None = None


def cpu_flags(cpuinfo: str | os.PathLike[str] = "/proc/cpuinfo") -> frozenset[str]:
    """The instruction-set flags of the first CPU in ``cpuinfo`` (empty where the file is missing, e.g. macOS)."""
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


def gpu_visible() -> bool:
    """Whether TensorFlow would run on a GPU; TensorFlow is imported only where an NVIDIA driver is present."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1") or not Path("/proc/driver/nvidia/gpus").is_dir():
        return False
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def _onnxruntime_present() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def choose_engine(
    model_file: str | os.PathLike[str],
    runtime: str = "auto",
    precision: str = "auto",
    flags: frozenset[str] | None = None,
    gpu: bool | None = None,
) -> EngineChoice:
    """The runtime and precision to run ``model_file`` with; ``auto`` decides from the machine (``flags``: CPU
    flags, ``gpu``: a GPU is visible; both detected when ``None``) and the model's precision report
    (``core.precision``). Raises ``ModelFileError`` for a pair that cannot run."""
    from core.precision import accepted_int8

    if runtime not in RUNTIMES or precision not in PRECISIONS:
        raise ModelFileError(f"unknown runtime {runtime!r} or precision {precision!r}")
    flags = cpu_flags() if flags is None else flags
    gpu = gpu_visible() if gpu is None else gpu
    onnx_ok = _onnxruntime_present()
    if runtime == "auto":
        runtime = "tensorflow" if gpu or precision == "bfloat16" or not onnx_ok else "onnxruntime"
    int8 = accepted_int8(Path(model_file)) if runtime == "onnxruntime" else None
    if precision == "auto":
        if int8 is not None and INT8_FLAGS & flags:
            return EngineChoice("onnxruntime", "int8", "int8 accepted on the held-out photos; the CPU has VNNI", int8)
        why = "a GPU" if gpu else "no accepted int8 file or no VNNI"
        return EngineChoice(runtime, "float32", why)  # type: ignore[arg-type]
    if precision == "int8" and int8 is None:
        raise ModelFileError(
            f"{model_file}: MODEL_PRECISION=int8 needs onnxruntime and an accepted <stem>.int8.onnx beside the "
            "model (python -m bench.precision --model FILE.h5 writes it)"
        )
    if precision == "bfloat16" and runtime != "tensorflow":
        raise ModelFileError("MODEL_PRECISION=bfloat16 runs on MODEL_RUNTIME=tensorflow only")
    if precision == "bfloat16" and not BF16_FLAGS & flags:
        logger.warning("MODEL_PRECISION=bfloat16 on a CPU without bf16 instructions: emulated, slow")
    if runtime == "onnxruntime" and not onnx_ok:
        raise ModelFileError("MODEL_RUNTIME=onnxruntime but onnxruntime is not installed")
    return EngineChoice(runtime, precision, "asked for", int8)  # type: ignore[arg-type]


def load_engine(
    model_file: str | os.PathLike[str],
    runtime: str | None = None,
    precision: str | None = None,
    threads: int = 1,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Engine:
    """Choose (:func:`choose_engine`) and load the engine for ``model_file``; ``runtime`` and ``precision`` default
    to ``MODEL_RUNTIME`` and ``MODEL_PRECISION`` (else ``auto``), so a command without settings of its own (such as
    ``age-evaluate``) runs what ``age-serve`` would; ``threads`` per model call (0: one per core); ``cache_dir``
    holds converted ONNX files. Raises ``ModelFileError`` when the file cannot be loaded."""
    runtime = runtime or os.environ.get("MODEL_RUNTIME", "auto")
    precision = precision or os.environ.get("MODEL_PRECISION", "auto")
    choice = choose_engine(model_file, runtime, precision)
    logger.info("forward pass: %s %s (%s)", choice.runtime, choice.precision, choice.why)
    if choice.runtime == "onnxruntime" and choice.int8_file is not None:
        return OnnxEngine(choice.int8_file, choice.precision, threads)
    if choice.runtime == "onnxruntime":
        from core.onnx_export import float32_onnx

        try:
            return OnnxEngine(float32_onnx(Path(model_file), cache_dir), choice.precision, threads)
        except ModelFileError:
            raise
        except Exception as exc:
            if runtime != "auto":
                raise ModelFileError(f"{model_file}: cannot run on onnxruntime: {exc}") from exc
            # A layer tf2onnx cannot convert (an antialiased resize inside an ensemble, say): TensorFlow runs it.
            logger.warning(
                "forward pass: %s does not convert to ONNX (%s); TensorFlow float32 instead", model_file, exc
            )
    return _tensorflow_engine(Path(model_file), choice.precision, threads)


def _tensorflow_engine(model_file: Path, precision: Precision, threads: int) -> TensorFlowEngine:
    import tensorflow as tf

    from core.artifact import load_model
    from core.fold import fold_affine

    # RuntimeError: TensorFlow already ran an op in this process (a second app, a test); the settings are fixed.
    if threads > 0:
        with contextlib.suppress(RuntimeError):
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with contextlib.suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
    if precision == "bfloat16":
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    # Folding each Affine into its convolution is exact and saves ~15% of a face_resnet forward pass.
    engine = TensorFlowEngine(fold_affine(load_model(model_file)), precision)
    if gpus:
        engine.device = f"GPU ({tf.config.experimental.get_device_details(gpus[0]).get('device_name', gpus[0].name)})"
    return engine
