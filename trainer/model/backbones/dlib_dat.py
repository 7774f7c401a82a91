"""Read the learnt tensors of a dlib DNN from its serialised ``.dat`` file, with numpy alone (no dlib, no compiler).

The format is dlib's ``serialize`` (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/cuda/tensor.h``):
- an integer is one byte whose low nibble says how many little-endian magnitude bytes follow and whose bit 7 is
  the sign (``0x01 0x02`` is 2, ``0x02 0x80 0x12`` is 4736);
- a string is an integer length and its bytes (``0x01 0x05 "con_4"``);
- a tensor is an integer version (2), then ``num_samples``, ``k``, ``nr``, ``nc`` as integers, then
  ``num_samples * k * nr * nc`` little-endian IEEE float32 values;
- a network is written from its loss layer inwards, but each ``add_layer`` writes its sub-network before its own
  details, so the layers' parameters appear in forward order, input first.

Only the layers with learnt parameters are read: ``con_4`` (convolution: a ``params`` tensor holding the filters
``(num_filters, k, nr, nc)`` then the biases, followed by the filter count, size, strides and padding), ``affine_``
(per-channel ``gamma`` then ``beta``) and ``fc_2`` (fully connected: ``num_outputs``, ``num_inputs``, then a
``(num_inputs [+1 with bias], num_outputs)`` matrix). Float data is skipped by its declared length, so a name can
never be matched inside weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["Conv", "DlibNet", "read_dlib_net"]

_NAMES = {"con": b"\x01\x05con_4", "affine": b"\x01\x07affine_", "fc": b"\x01\x04fc_2"}


@dataclass(frozen=True)
class Conv:
    """One convolution: ``kernel`` ``(nr, nc, k_in, num_filters)`` in Keras order, ``bias`` ``(num_filters,)``."""

    kernel: np.ndarray
    bias: np.ndarray
    stride: tuple[int, int]
    padding: tuple[int, int]


@dataclass(frozen=True)
class DlibNet:
    """The learnt layers of a dlib network in forward order."""

    convs: list[Conv]
    affines: list[tuple[np.ndarray, np.ndarray]]
    fc: list[np.ndarray]


class _Stream:
    def __init__(self, data: bytes, source: str) -> None:
        self.data = data
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> ValueError:
        return ValueError(f"{self.source}: not a dlib network file this reader understands ({what} at byte {self.pos})")

    def integer(self) -> int:
        if self.pos >= len(self.data):
            raise self.fail("unexpected end of file")
        head = self.data[self.pos]
        size = head & 0x0F
        if size > 8 or self.pos + 1 + size > len(self.data):
            raise self.fail("malformed integer")
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + size], "little")
        self.pos += 1 + size
        return -value if head & 0x80 else value

    def tensor(self) -> np.ndarray:
        version = self.integer()
        if version != 2:
            raise self.fail(f"tensor format version {version}, expected 2")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        end = self.pos + 4 * count
        if min(shape) < 0 or end > len(self.data):
            raise self.fail(f"tensor of shape {shape} runs past the end")
        values = np.frombuffer(self.data, dtype="<f4", count=count, offset=self.pos).astype(np.float32)
        self.pos = end
        return values.reshape(shape)

    def next_layer(self) -> str | None:
        found = {kind: self.data.find(tag, self.pos) for kind, tag in _NAMES.items()}
        found = {kind: at for kind, at in found.items() if at >= 0}
        if not found:
            return None
        kind = min(found, key=found.__getitem__)
        self.pos = found[kind] + len(_NAMES[kind])
        return kind


def _conv(stream: _Stream) -> Conv:
    params = stream.tensor().ravel()
    filters, rows, cols, stride_y, stride_x, pad_y, pad_x = (stream.integer() for _ in range(7))
    per_filter_in = (params.size - filters) // (filters * rows * cols)
    if per_filter_in * filters * rows * cols + filters != params.size:
        raise stream.fail(f"convolution of {filters} {rows}x{cols} filters does not fit {params.size} values")
    weights = params[: params.size - filters].reshape(filters, per_filter_in, rows, cols)
    return Conv(
        kernel=np.ascontiguousarray(weights.transpose(2, 3, 1, 0)),
        bias=params[params.size - filters :].copy(),
        stride=(stride_y, stride_x),
        padding=(pad_y, pad_x),
    )


def _affine(stream: _Stream) -> tuple[np.ndarray, np.ndarray]:
    params = stream.tensor().ravel()
    half = params.size // 2
    return params[:half].copy(), params[half:].copy()


def _fc(stream: _Stream) -> np.ndarray:
    outputs, inputs = stream.integer(), stream.integer()
    params = stream.tensor()
    if params.shape[0] not in (inputs, inputs + 1) or params.shape[1] != outputs:
        raise stream.fail(f"fully connected {inputs}->{outputs} with a {params.shape[:2]} matrix")
    return params.reshape(params.shape[0], outputs)


def read_dlib_net(path: str | Path) -> DlibNet:
    """Parse ``path`` (e.g. ``dlib_face_recognition_resnet_model_v1.dat``) into its learnt layers, forward order.

    Raises ``FileNotFoundError`` when the file is missing and ``ValueError`` naming the file and byte offset when
    it is not a dlib network in the format described above.
    """
    source = Path(path)
    stream = _Stream(source.read_bytes(), str(source))
    net = DlibNet(convs=[], affines=[], fc=[])
    readers = {"con": (_conv, net.convs), "affine": (_affine, net.affines), "fc": (_fc, net.fc)}
    while (kind := stream.next_layer()) is not None:
        reader, into = readers[kind]
        into.append(reader(stream))  # type: ignore[arg-type]
    if not net.convs:
        raise stream.fail("no convolution layers found")
    return net
