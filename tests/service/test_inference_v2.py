"""Open Inference Protocol v2 (REST), checked with the real ``tritonclient[http]`` client KServe and Triton users run:
health, metadata, and an inference with the binary tensor data extension answering what ``POST /predict`` answers."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from service.main import create_app
from service.settings import ServiceSettings
from tests.service.conftest import NUM_CLASSES, image_bytes, live_server, photo_path

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def url(settings: ServiceSettings) -> Iterator[str]:
    with live_server(create_app(settings)) as base:
        yield base


@pytest.fixture(scope="module")
def client(url: str) -> Iterator[triton.InferenceServerClient]:
    session = triton.InferenceServerClient(url.removeprefix("http://"))
    yield session
    session.close()


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    return photo_path("2008_001009.jpg").read_bytes()


@pytest.fixture(scope="module")
def predicted(url: str, jpeg: bytes) -> httpx.Response:
    response = httpx.post(f"{url}/predict", files={"file": ("p.jpg", jpeg, "image/jpeg")}, timeout=60)
    assert response.status_code == 200, response.text
    return response


def _image_input(data: bytes) -> triton.InferInput:
    tensor = triton.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([data], dtype=np.object_), binary_data=True)
    return tensor


def test_tritonclient_reads_the_server_live_and_the_model_ready(client: triton.InferenceServerClient) -> None:
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("age")
    assert not client.is_model_ready("resnet50")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]


def test_model_metadata_names_the_tensors(client: triton.InferenceServerClient, predicted: httpx.Response) -> None:
    metadata = client.get_model_metadata("age")
    assert metadata["name"] == "age"
    assert metadata["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [1]}]
    shapes = {output["name"]: (output["datatype"], output["shape"]) for output in metadata["outputs"]}
    assert shapes == {
        "result_value": ("INT32", [-1]),
        "age_interval": ("INT32", [-1, 2]),
        "box": ("INT32", [-1, 4]),
        "raw_logits": ("FP32", [-1, NUM_CLASSES - 1]),
    }
    assert metadata["parameters"]["model_id"] == predicted.json()["model_id"]


def test_binary_infer_of_a_jpeg_answers_what_predict_answers(
    client: triton.InferenceServerClient, jpeg: bytes, predicted: httpx.Response
) -> None:
    result = client.infer("age", [_image_input(jpeg)])
    faces = predicted.json()["faces"]
    assert result.as_numpy("result_value").tolist() == [face["result_value"] for face in faces]
    assert result.as_numpy("age_interval").tolist() == [face["age_interval"] for face in faces]
    assert result.as_numpy("box").tolist() == [face["box"] for face in faces]
    logits = result.as_numpy("raw_logits")
    assert logits.dtype == np.float32
    assert logits.shape == (len(faces), NUM_CLASSES - 1)
    np.testing.assert_allclose(logits, [face["raw_logits"] for face in faces], rtol=1e-6)
    assert result.get_response()["parameters"]["model_id"] == predicted.headers["X-Model-Id"]


def test_outputs_can_be_asked_for_in_json(
    client: triton.InferenceServerClient, jpeg: bytes, predicted: httpx.Response
) -> None:
    wanted = [triton.InferRequestedOutput("result_value", binary_data=False)]
    result = client.infer("age", [_image_input(jpeg)], outputs=wanted, request_id="r-1")
    response = result.get_response()
    assert [output["name"] for output in response["outputs"]] == ["result_value"]
    assert response["outputs"][0]["data"] == [face["result_value"] for face in predicted.json()["faces"]]
    assert response["id"] == "r-1"


def test_a_json_body_with_the_photo_in_base64_is_accepted(url: str, jpeg: bytes, predicted: httpx.Response) -> None:
    request = {
        "inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(jpeg).decode()]}]
    }
    response = httpx.post(f"{url}/v2/models/age/infer", json=request, timeout=60)
    assert response.status_code == 200, response.text
    outputs = {output["name"]: output for output in response.json()["outputs"]}
    faces = predicted.json()["faces"]
    assert outputs["result_value"]["data"] == [face["result_value"] for face in faces]
    assert outputs["box"]["shape"] == [len(faces), 4]
    assert response.headers["X-Model-Id"] == predicted.json()["model_id"]


def test_errors_reach_tritonclient_with_their_message(client: triton.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException, match="no face") as no_face:
        client.infer("age", [_image_input(image_bytes(seed=1))])
    assert no_face.value.status() == "422"
    with pytest.raises(InferenceServerException, match=r"not an image|unsupported|image type") as not_image:
        client.infer("age", [_image_input(b"plain text, not a photo")])
    assert not_image.value.status() == "415"
    with pytest.raises(InferenceServerException, match="no model 'other'"):
        client.infer("other", [_image_input(b"x")])


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (b"{not json", {}),
        (json.dumps({"inputs": []}).encode(), {}),
        (json.dumps({"inputs": [{"name": "photo", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}]}).encode(), {}),
        (json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["%%%"]}]}).encode(), {}),
        (
            b'{"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 9}}]}'
            b"\x05\x00\x00\x00abc",
            {"Inference-Header-Content-Length": "101"},
        ),
        (b"{}", {"Inference-Header-Content-Length": "99"}),
    ],
    ids=["bad-json", "no-input", "wrong-name", "bad-base64", "short-binary", "header-past-body"],
)
def test_a_malformed_inference_request_is_a_400_with_an_error(url: str, body: bytes, headers: dict[str, str]) -> None:
    response = httpx.post(f"{url}/v2/models/age/infer", content=body, headers=headers, timeout=30)
    assert response.status_code == 400, response.text
    problem = response.json()
    assert problem["error"] == problem["detail"]
    assert problem["code"] in {"bad_request", "corrupt_image"}


def test_only_the_served_version_answers(url: str) -> None:
    assert httpx.get(f"{url}/v2/models/age/versions/7/ready", timeout=10).status_code == 404
    assert httpx.get(f"{url}/v2/models/age/versions/7", timeout=10).json()["code"] == "not_found"
