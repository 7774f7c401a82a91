"""schemathesis against the service's own OpenAPI schema: no 5xx, and every response matches the schema.

The app (tiny model, real dlib aligner) is reached in-process through ASGI; schemathesis runs its lifespan on its
own event loop, so this module builds its own app rather than sharing the session one. Examples are bounded so the
whole module stays well under a minute. Random bytes are never a photo of a face, so the check that schema-valid
input gets a 2xx (``positive_data_acceptance``) does not apply to ``POST /predict``, and ``POST /predict/batch`` answers
a part that is not a photo with that item's error inside a 200, so schema-violating parts are not refused there
(``negative_data_rejection``); every other built-in check runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema

from service.settings import ServiceSettings

EXAMPLES_PER_MODE = 100


# One app per mode: the event loop that schemathesis ran the lifespan on is gone after a test, and with it the
# micro-batcher's task, which (rightly) makes the app unready.
@pytest.fixture
def api_schema(settings: ServiceSettings) -> Iterator[OpenApiSchema]:
    from schemathesis.python.asgi import shutdown_lifespans

    from service.main import create_app

    app = create_app(settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    runtime = app.state.runtime
    deadline = time.monotonic() + 60
    while not (runtime.ready or runtime.error) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert runtime.ready, runtime.error or "the app did not become ready in 60 s"
    yield schema
    shutdown_lifespans()


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=str)
def test_every_operation_answers_within_its_schema(api_schema: OpenApiSchema, mode: GenerationMode) -> None:
    # The strategy comes from the fixture, so @given is applied here; schemathesis' own pytest wrapper
    # (schemathesis.pytest.from_fixture) reads a private pytest attribute that pytest 9 no longer has.
    @given(case=api_schema.as_strategy(mode))
    @settings(
        max_examples=EXAMPLES_PER_MODE,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answers(case: schemathesis.Case) -> None:
        excluded = [schemathesis.checks.positive_data_acceptance] if case.operation.path == "/predict" else []
        if case.operation.path == "/predict/batch":
            # A part that is not a photo is that item's own error inside a 200 (the contract), not a refusal.
            excluded.append(schemathesis.checks.negative_data_rejection)
        response = case.call_and_validate(excluded_checks=excluded)
        assert response.status_code < 500, response.text

    answers()
