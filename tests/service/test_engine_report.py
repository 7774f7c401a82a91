"""GET /health and GET /model say how the forward pass runs; MODEL_PRECISION that cannot run stops start-up."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from core.engine import choose_engine
from service.main import create_app
from service.settings import ServiceSettings, load_settings
from tests.service.conftest import wait_until_settled


def test_health_and_model_report_the_engine_chosen_for_this_machine(client: TestClient, model_file: Path) -> None:
    expected = choose_engine(model_file)
    health = client.get("/health").json()["model"]
    model = client.get("/model").json()
    for body in (health, model):
        assert (body["runtime"], body["precision"]) == (expected.runtime, expected.precision)


def test_int8_without_an_accepted_int8_file_stops_start_up(settings: ServiceSettings) -> None:
    reasons: list[str] = []
    strict = load_settings(**{**settings.model_dump(), "model_precision": "int8"})
    with TestClient(create_app(strict, on_fatal=reasons.append)) as client:
        assert wait_until_settled(client) == 503
    assert reasons
    assert "MODEL_PRECISION=int8" in reasons[0]


@pytest.mark.parametrize("value", ["float16", "fast"])
def test_an_unknown_precision_is_refused_by_name(value: str) -> None:
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="MODEL_PRECISION"):
        load_settings(model_precision=value)
