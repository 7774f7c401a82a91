"""The age distribution in every answer: age_probas, age_interval, coverage, calibrated, min_age and uncertain."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from core.artifact import read_metadata
from core.calibration import Calibration
from service.options import AnswerOptions
from tests.service.conftest import NUM_CLASSES, START_LABEL, image_bytes

END_LABEL = START_LABEL + NUM_CLASSES - 1


def _post(client: TestClient, seed: int = 5, **params: object) -> httpx.Response:
    return client.post("/predict", files={"file": ("p.png", image_bytes(seed=seed), "image/png")}, params=params)


def test_every_face_carries_its_distribution_and_interval(client: TestClient, fake_faces) -> None:
    fake_faces(3)
    body = _post(client).json()
    for face in body["faces"]:
        probas = np.array(face["age_probas"])
        assert probas.shape == (NUM_CLASSES,)
        assert (probas >= 0).all()
        assert probas.sum() == pytest.approx(1.0, abs=1e-6)
        np.testing.assert_allclose(1 - np.cumsum(probas)[:-1], face["raw_probas"], atol=1e-6)
        low, high = face["age_interval"]
        assert START_LABEL <= low <= high <= END_LABEL
        assert (face["coverage"], face["calibrated"], face["uncertain"]) == (0.9, False, False)
        assert face["p_at_least"] is None
        assert face["at_least"] is None
        assert probas[low - START_LABEL : high - START_LABEL + 1].sum() >= 0.9 - 1e-6


def test_min_age_gives_p_at_least_and_the_thresholded_decision(client: TestClient, fake_faces) -> None:
    fake_faces(3)
    for min_age in (0, START_LABEL, START_LABEL + 1, 18, 21, 40, 65, END_LABEL, END_LABEL + 1, 150):
        for face in _post(client, seed=7, min_age=min_age).json()["faces"]:
            index = min_age - START_LABEL - 1
            expected = 1.0 if index < 0 else 0.0 if index >= NUM_CLASSES - 1 else face["raw_probas"][index]
            assert face["p_at_least"] == pytest.approx(expected, abs=1e-6)
            assert face["at_least"] is (face["result_value"] >= min_age)


def test_a_higher_coverage_widens_the_interval(client: TestClient, fake_faces) -> None:
    fake_faces(2)
    narrow = _post(client, seed=9, coverage=0.5).json()["faces"]
    wide = _post(client, seed=9, coverage=0.99).json()["faces"]
    for small, large in zip(narrow, wide, strict=True):
        assert small["coverage"] == 0.5
        assert large["age_interval"][0] <= small["age_interval"][0] <= small["age_interval"][1]
        assert small["age_interval"][1] <= large["age_interval"][1]


@pytest.mark.parametrize(
    "params",
    [{"coverage": 0}, {"coverage": 1}, {"coverage": 1.5}, {"coverage": "x"}, {"min_age": -1}, {"min_age": "x"}],
)
def test_bad_coverage_or_min_age_is_422(client: TestClient, fake_faces, params: dict) -> None:
    fake_faces(1)
    response = _post(client, **params)
    assert response.status_code == 422
    assert next(iter(params)) in str(response.json()["detail"])


def test_openapi_describes_the_new_parameters_and_fields(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    params = {p["name"]: p for p in schema["paths"]["/predict"]["post"]["parameters"]}
    assert {"coverage", "min_age", "threshold"} <= set(params)
    assert params["coverage"]["description"]
    fields = schema["components"]["schemas"]["FacePrediction"]["properties"]
    for name in ("age_probas", "age_interval", "coverage", "calibrated", "uncertain", "p_at_least", "at_least"):
        assert fields[name].get("description"), name


def test_a_calibrated_model_uses_its_scores_and_flags_wide_intervals(model_file: Path) -> None:
    from core.artifact import load_model
    from service.predictor import Predictor

    metadata = read_metadata(model_file)
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 1, (4, 1)) + np.linspace(6, -6, NUM_CLASSES - 1)[None, :]
    plain = Predictor(load_model(model_file), metadata, 0.5, "CPU")
    # Scores of 1 everywhere: every calibrated interval must be the whole label range.
    calibration = Calibration(np.ones(50), "all.csv")
    calibrated = Predictor(
        load_model(model_file), metadata | {"calibration": calibration.to_metadata()}, 0.5, "CPU", 30
    )
    options = AnswerOptions(coverage=0.8)
    for raw, face in zip(
        plain.faces([[0, 0, 1, 1]] * 4, logits, options),
        calibrated.faces([[0, 0, 1, 1]] * 4, logits, options),
        strict=True,
    ):
        assert (raw.calibrated, face.calibrated) == (False, True)
        assert face.age_interval == [START_LABEL, END_LABEL]
        assert face.uncertain
        assert raw.age_interval[1] - raw.age_interval[0] < END_LABEL - START_LABEL
