"""Response bodies of the HTTP API (and of ``age-demo``'s JSON files, which are the same ``PredictResponse``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

P_AT_LEAST_DESCRIPTION = (
    "with query min_age=T: P(age >= T) = raw_probas[T - start_label - 1]; 1 for T <= start_label, 0 for T above "
    "the last age"
)
AT_LEAST_DESCRIPTION = "with query min_age=T: result_value >= T (the thresholded decision)"


def _absent(value: object) -> bool:
    return value is None


class FaceSummary(BaseModel):
    """The CORAL output for one face (Cao et al. 2019, Eq. 1) but its distribution ``age_probas``: what the top level
    of a ``view=full`` answer repeats of the largest face.

    ``raw_logits`` and ``raw_probas`` hold the K-1 task outputs, ``raw_probas[k] = P(age > start_label + k)``
    (non-increasing in k); ``thresholded_probas[k] = 1`` iff ``raw_probas[k] > threshold``; ``result_value`` is
    ``start_label + sum(thresholded_probas)``, in years. ``box`` is ``[left, top, right, bottom]`` in pixels of the
    upright (EXIF-rotated) image. The distribution fields come from ``core.distribution``.
    """

    raw_logits: list[float]
    raw_probas: list[float]
    threshold: float = Field(gt=0.0, lt=1.0)
    thresholded_probas: list[int]
    result_value: int
    box: list[int] = Field(min_length=4, max_length=4)
    age_interval: list[int] = Field(
        min_length=2,
        max_length=2,
        description="[low, high] in years, inclusive: the central interval of age_probas holding the true age with "
        "probability `coverage` (split-conformal when `calibrated`)",
    )
    coverage: float = Field(gt=0.0, lt=1.0, description="the coverage age_interval was built for")
    calibrated: bool = Field(
        description="true when the model carries a split-conformal calibration; false: the raw central interval"
    )
    uncertain: bool = Field(
        default=False, description="age_interval is wider (high - low) than MAX_INTERVAL_WIDTH years (off by default)"
    )
    p_at_least: float | None = Field(
        default=None, ge=0.0, le=1.0, description=P_AT_LEAST_DESCRIPTION + "; null without min_age"
    )
    at_least: bool | None = Field(default=None, description=AT_LEAST_DESCRIPTION + "; null without min_age")


class FacePrediction(FaceSummary):
    """Every output for one face: :class:`FaceSummary`'s fields and the distribution ``age_probas``."""

    age_probas: list[float] = Field(
        description="K floats, P(age = start_label + i), summing to 1: differences of 1 - raw_probas"
    )


MODEL_ID_DESCRIPTION = "the model that answered, `name[:version]@sha256:<12 hex>` (also the `X-Model-Id` header)"


class PredictResponse(FaceSummary):
    """``POST /predict`` (``view=full``): the largest face's fields at the top level (all but its K floats of
    ``age_probas``, which only ``faces`` carries), every face, largest first, in ``faces``, and the id of the model
    that answered. Floats are written at float32's shortest round-trip form."""

    model_id: str = Field(description=MODEL_ID_DESCRIPTION)
    faces: list[FacePrediction]


class BasicFace(BaseModel):
    """One face of a ``view=basic`` answer: the age, its interval and the box; ``p_at_least`` and ``at_least`` only
    when ``min_age`` was given."""

    result_value: int
    age_interval: list[int] = Field(min_length=2, max_length=2)
    coverage: float = Field(gt=0.0, lt=1.0)
    calibrated: bool
    uncertain: bool = False
    box: list[int] = Field(min_length=4, max_length=4)
    # Left out when absent rather than null: basic is for the few bytes.
    p_at_least: float | None = Field(
        default=None, ge=0.0, le=1.0, exclude_if=_absent, description=P_AT_LEAST_DESCRIPTION
    )
    at_least: bool | None = Field(default=None, exclude_if=_absent, description=AT_LEAST_DESCRIPTION)


class BasicResponse(BaseModel):
    """``POST /predict?view=basic``: the model's id and, largest first, each face's age, interval and box."""

    model_id: str = Field(description=MODEL_ID_DESCRIPTION)
    faces: list[BasicFace]


Answer = PredictResponse | BasicResponse
"""The body of ``POST /predict`` (and of each answered ``/predict/batch`` item), by ``view``."""


class HealthResponse(BaseModel):
    """``GET /health`` once the model is loaded and warm."""

    status: str
    model: dict[str, Any]
    device: str


class ErrorResponse(BaseModel):
    """Every error, as RFC 9457 problem details (``application/problem+json``); ``service.errors`` builds it."""

    type: str = Field(description="`urn:age-estimation:problem:<code>`: identifies the kind of problem")
    title: str = Field(description="a short summary of the kind of problem, fixed per `code`")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="one human-readable line: what was wrong with this request")
    code: str = Field(description="stable snake_case name of the problem (see docs/serving.md): branch on this")
    request_id: str | None = Field(description="this request's `X-Request-ID`, as in the service's logs")


def error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """A route's ``responses=`` for OpenAPI: each status code with its description and the :class:`ErrorResponse`
    body."""
    return {status: {"model": ErrorResponse, "description": text} for status, text in descriptions.items()}
