"""A ``.h5`` converted to ONNX for :mod:`core.engine`'s onnxruntime engines, cached by the file's sha256.

The exported graph takes the chips as ``uint8`` ``(N, S, S, 3)`` (input ``chips``) and casts them itself, as the
Keras model scales its own pixels, and answers ``logits`` ``(N, K-1)`` float32; the batch dimension stays free.
Conversion (tf2onnx, from the frozen graph of the model with each ``Affine`` folded into its convolution) takes
about 8 s for the face ResNet, so its result is kept in a cache folder under ``<sha256 of the .h5>.float32.onnx``:
every later start, ``age-demo`` shard or hot-reloaded copy of the same file reuses it, and a changed file never
finds a stale one.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from core.artifact import file_sha256

ONNX_OPSET = 17
CONVERSION = "uint8-chips-v1"
"""Names the graph layout; part of the cache key so that a change of the recipe never reads an old file."""


def default_cache_dir() -> Path:
    """``$MODEL_CACHE_DIR`` when set (the service's setting, honoured by ``age-demo``, ``age-evaluate`` and
    ``age-batch`` too), else ``$XDG_CACHE_HOME/age-estimation`` (``~/.cache/age-estimation``)."""
    chosen = os.environ.get("MODEL_CACHE_DIR")
    if chosen:
        return Path(chosen)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "age-estimation"


def _writable(folder: Path) -> Path:
    """``folder`` if it can be created and written, else a private folder under the system's temp dir."""
    with contextlib.suppress(OSError):
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    fallback = Path(tempfile.gettempdir()) / f"age-estimation-{os.getuid()}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


def float32_onnx(model_file: Path, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """The float32 ONNX file of ``model_file``, converted now unless the cache already holds it."""
    folder = _writable(Path(cache_dir) if cache_dir else default_cache_dir())
    target = folder / f"{file_sha256(model_file)}.{CONVERSION}.float32.onnx"
    if not target.is_file():
        convert_to_onnx(model_file, target)
    return target


def convert_to_onnx(model_file: Path, target: Path) -> None:
    """Write the network of ``model_file`` (``.h5``) as ONNX at ``target`` (atomically: a reader never sees half)."""
    import onnx
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from core.artifact import load_model
    from core.fold import fold_affine

    model = fold_affine(load_model(model_file))
    size = int(model.input_shape[1])
    forward = tf.function(
        lambda chips: model(tf.cast(chips, tf.float32), training=False),
        input_signature=[tf.TensorSpec((None, size, size, 3), tf.uint8, name="chips")],
    )
    # From the frozen graph: from_function turns tensors a layer made eagerly into graph inputs nobody can feed.
    frozen = convert_variables_to_constants_v2(forward.get_concrete_function())
    (chips,), (logits,) = frozen.inputs, frozen.outputs
    proto, _ = tf2onnx.convert.from_graph_def(
        frozen.graph.as_graph_def(), input_names=[chips.name], output_names=[logits.name], opset=ONNX_OPSET
    )
    names = {chips.name: "chips", logits.name: "logits"}
    for node in proto.graph.node:
        node.input[:] = [names.get(name, name) for name in node.input]
        node.output[:] = [names.get(name, name) for name in node.output]
    for value in [*proto.graph.input, *proto.graph.output]:
        value.name = names.get(value.name, value.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    try:
        onnx.save(proto, tmp)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
