"""The three export formats of ``age-export``: how each is written from one traced ``tf.function`` and how each is
run back with its own runtime for the check.

``forward`` maps ``chips`` float32 ``(N, S, S, 3)`` (RGB 0..255) to ``{"logits": (N, K-1) float32}``; every format
keeps the batch dimension free. TensorFlow (SavedModel, TFLite) and tf2onnx + onnxruntime (ONNX) are imported only
when their format is asked for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

FORMATS = ("savedmodel", "onnx", "tflite")
SUFFIXES = {"savedmodel": "", "onnx": ".onnx", "tflite": ".tflite"}
ONNX_OPSET = 17


def convert(fmt: str, model: Any, forward: Any, target: Path) -> None:
    """Write ``forward`` (a ``tf.function`` with an input signature) as ``fmt`` at ``target``."""
    if fmt == "savedmodel":
        _savedmodel(model, forward, target)
    elif fmt == "onnx":
        _onnx(forward, target)
    elif fmt == "tflite":
        _tflite(forward, target)
    else:
        raise ValueError(f"unknown export format {fmt!r}")


def run_export(fmt: str, path: Path, chips: np.ndarray) -> np.ndarray:
    """Logits ``(N, K-1)`` of the export at ``path`` on ``chips`` float32 ``(N, S, S, 3)``, by its own runtime."""
    if fmt == "savedmodel":
        return _run_savedmodel(path, chips)
    if fmt == "onnx":
        return _run_onnx(path, chips)
    if fmt == "tflite":
        return _run_tflite(path, chips)
    raise ValueError(f"unknown export format {fmt!r}")


def _savedmodel(model: Any, forward: Any, target: Path) -> None:
    import tensorflow as tf

    module = tf.Module()
    # Tracking the Keras model keeps its variables in the SavedModel; the signature is what TF Serving calls.
    module.model = model
    module.serve = forward
    tf.saved_model.save(module, str(target), signatures={"serving_default": forward.get_concrete_function()})


def _run_savedmodel(path: Path, chips: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return np.asarray(serve(chips=tf.constant(chips))["logits"])


def _onnx(forward: Any, target: Path) -> None:
    import onnx
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # From the frozen graph: tf2onnx.convert.from_function turns tensors a layer made eagerly (Keras'
    # Normalization with a given mean and variance, say) into extra graph inputs nobody can feed.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    (chips,), (logits,) = frozen.inputs, frozen.outputs
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[chips.name], output_names=[logits.name], opset=ONNX_OPSET
    )
    _rename(proto.graph, {chips.name: "chips", logits.name: "logits"})
    onnx.save(proto, str(target))


def _rename(graph: Any, names: dict[str, str]) -> None:
    """Rename tensors of an ONNX graph (TensorFlow's ``chips:0`` -> ``chips``) wherever they are referenced."""
    for node in graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for value in [*graph.input, *graph.output]:
        value.name = names.get(value.name, value.name)


def _run_onnx(path: Path, chips: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (output,) = session.run(["logits"], {"chips": chips})
    return np.asarray(output)


def _tflite(forward: Any, target: Path) -> None:
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    # The converter leaves Keras 3's variables as resource variables, which the interpreter then reads
    # uninitialised (NaN logits under XNNPACK, a failed READ_VARIABLE without it); freezing them first avoids that.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
    # Float32 throughout: quantisation would break the 1e-4 agreement with the .h5 the check asks for.
    converter.optimizations = []
    try:
        flat = converter.convert()
    except Exception:
        # An op without a TFLite kernel (e.g. an antialiased resize inside an ensemble) runs as a TF op instead.
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, tf.lite.OpsSet.SELECT_TF_OPS]
        flat = converter.convert()
    target.write_bytes(flat)


def _run_tflite(path: Path, chips: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(model_path=str(path))
    (inp,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(inp["index"], list(chips.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], chips)
    interpreter.invoke()
    (out,) = interpreter.get_output_details()
    return np.asarray(interpreter.get_tensor(out["index"]))
