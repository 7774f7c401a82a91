"""The Open Inference Protocol v2 wire format (KServe's and Triton's REST protocol) for the ``age`` model.

Request: a JSON object with one input, ``image``, datatype ``BYTES``, shape ``[1]``: the encoded photo. Either in
the binary tensor data extension (the header ``Inference-Header-Content-Length: N`` says the first N bytes of the
body are the JSON; the input's ``parameters.binary_data_size`` bytes follow it, each BYTES element as a 4-byte
little-endian length and its bytes, as ``tritonclient`` sends them), or in the JSON as ``"data": ["<base64>"]``.

Response: for the F faces, largest first, ``result_value`` INT32 ``[F]``, ``age_interval`` INT32 ``[F, 2]``,
``box`` INT32 ``[F, 4]`` and ``raw_logits`` FP32 ``[F, K-1]``, each as JSON ``data`` (row-major) or, when asked
(``parameters.binary_data`` of a requested output, or ``binary_data_output`` of the request), as little-endian bytes
after the JSON. See https://kserve.github.io/website/docs/concepts/architecture/data-plane/v2-protocol and Triton's
binary data extension.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.errors import AgeEstimationError, ImageTooLargeError
from service.errors import BadRequestError
from service.schemas import FacePrediction
from service.upload import decode_base64

MODEL_NAME = "age"
HEADER_LENGTH = "Inference-Header-Content-Length"
INPUT_NAME = "image"
OUTPUT_DATATYPES = {"result_value": "INT32", "age_interval": "INT32", "box": "INT32", "raw_logits": "FP32"}
_DTYPES = {"INT32": np.dtype("<i4"), "FP32": np.dtype("<f4")}


def model_metadata(num_classes: int) -> dict[str, Any]:
    """The tensors of ``GET /v2/models/age`` (``-1``: the number of faces F)."""
    shapes = {"result_value": [-1], "age_interval": [-1, 2], "box": [-1, 4], "raw_logits": [-1, num_classes - 1]}
    return {
        "inputs": [{"name": INPUT_NAME, "datatype": "BYTES", "shape": [1]}],
        "outputs": [
            {"name": name, "datatype": datatype, "shape": shapes[name]} for name, datatype in OUTPUT_DATATYPES.items()
        ],
    }


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request: the photo, the outputs wanted (name -> binary?) and the request's ``id``."""

    image: bytes
    outputs: dict[str, bool]
    id: str | None


def parse_request(body: bytes, header_length: str | None, max_bytes: int) -> InferRequest:
    """Parse an inference request body; ``BadRequestError`` (400) naming what is wrong, image errors as they are."""
    header, binary = _split(body, header_length)
    inputs = header.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise BadRequestError(f"'inputs' must hold exactly one tensor, '{INPUT_NAME}'")
    tensor = inputs[0]
    if tensor.get("name") != INPUT_NAME or tensor.get("datatype") != "BYTES" or tensor.get("shape") != [1]:
        raise BadRequestError(f"the input must be '{INPUT_NAME}', datatype BYTES, shape [1] (the encoded photo)")
    parameters = tensor.get("parameters") or {}
    if isinstance(parameters, dict) and "binary_data_size" in parameters:
        image = _binary_element(binary, parameters["binary_data_size"], max_bytes)
    else:
        image = _json_element(tensor.get("data"), max_bytes)
    request_parameters = header.get("parameters") or {}
    binary_default = isinstance(request_parameters, dict) and request_parameters.get("binary_data_output") is True
    request_id = header.get("id")
    return InferRequest(image, _requested_outputs(header.get("outputs"), binary_default), _text_or_none(request_id))


def _split(body: bytes, header_length: str | None) -> tuple[dict[str, Any], bytes]:
    if header_length is None:
        size = len(body)
    elif header_length.isdigit() and int(header_length) <= len(body):
        size = int(header_length)
    else:
        raise BadRequestError(f"{HEADER_LENGTH} must be the byte length of the JSON at the start of the body")
    try:
        header = json.loads(body[:size])
    except (ValueError, RecursionError) as exc:
        # ValueError also covers an integer of over 4,300 digits (Python's int limit), not only bad JSON: a 400.
        raise BadRequestError(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(header, dict):
        raise BadRequestError("the inference request must be a JSON object")
    return header, body[size:]


def _binary_element(binary: bytes, size: Any, max_bytes: int) -> bytes:
    """The one element of a BYTES tensor sent as binary data: ``<uint32 LE length><bytes>``."""
    if not isinstance(size, int) or size != len(binary) or size < 4:
        raise BadRequestError(f"binary_data_size must be the {len(binary)} bytes that follow the JSON")
    (length,) = struct.unpack_from("<I", binary)
    if length != size - 4:
        raise BadRequestError("the BYTES tensor must hold exactly one element, the encoded photo")
    if length > max_bytes:
        raise ImageTooLargeError(f"the image is {length} bytes; the limit is {max_bytes} bytes")
    return binary[4:]


def _json_element(data: Any, max_bytes: int) -> bytes:
    """The one element of a BYTES tensor sent in JSON: the photo's bytes in base64."""
    while isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], str):
        raise BadRequestError("send the photo as binary data or as 'data': ['<base64 of the photo>']")
    image = decode_base64(data[0], max_bytes)
    if isinstance(image, AgeEstimationError):
        raise image
    return image


def _requested_outputs(outputs: Any, binary_default: bool) -> dict[str, bool]:
    if outputs is None:
        return dict.fromkeys(OUTPUT_DATATYPES, binary_default)
    if not isinstance(outputs, list) or not all(isinstance(output, dict) for output in outputs):
        raise BadRequestError("'outputs' must be a list of {\"name\": ...} objects")
    wanted = {}
    for output in outputs:
        name = output.get("name")
        if name not in OUTPUT_DATATYPES:
            raise BadRequestError(f"unknown output {name!r}; the outputs are {', '.join(OUTPUT_DATATYPES)}")
        parameters = output.get("parameters") or {}
        wanted[name] = bool(parameters.get("binary_data", binary_default)) if isinstance(parameters, dict) else False
    return wanted


def _text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def output_tensors(faces: Sequence[FacePrediction]) -> dict[str, np.ndarray]:
    """The four output tensors of the faces (at least one), largest first."""
    return {
        "result_value": np.array([face.result_value for face in faces], dtype="<i4"),
        "age_interval": np.array([face.age_interval for face in faces], dtype="<i4").reshape(-1, 2),
        "box": np.array([face.box for face in faces], dtype="<i4").reshape(-1, 4),
        "raw_logits": np.array([face.raw_logits for face in faces], dtype="<f4").reshape(len(faces), -1),
    }


def encode_response(
    tensors: dict[str, np.ndarray], request: InferRequest, model_version: str | None, model_id: str
) -> tuple[bytes, int | None]:
    """The response body and, when some output is binary, the length of its JSON part (for ``HEADER_LENGTH``)."""
    outputs, chunks = [], []
    for name, binary in request.outputs.items():
        tensor = tensors[name].astype(_DTYPES[OUTPUT_DATATYPES[name]], copy=False)
        entry: dict[str, Any] = {"name": name, "datatype": OUTPUT_DATATYPES[name], "shape": list(tensor.shape)}
        if binary:
            chunk = tensor.tobytes()
            entry["parameters"] = {"binary_data_size": len(chunk)}
            chunks.append(chunk)
        else:
            entry["data"] = tensor.ravel().tolist()
        outputs.append(entry)
    header: dict[str, Any] = {"model_name": MODEL_NAME, "outputs": outputs, "parameters": {"model_id": model_id}}
    if model_version is not None:
        header["model_version"] = model_version
    if request.id is not None:
        header["id"] = request.id
    encoded = json.dumps(header, separators=(",", ":")).encode()
    return encoded + b"".join(chunks), len(encoded) if chunks else None
