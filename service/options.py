"""The query parameters that shape an answer (``threshold``, ``coverage``, ``min_age``), as one FastAPI dependency.

Every route that answers with face predictions takes ``AnswerOptionsDep``, so ``/predict`` and its batch variant
describe, validate (422 outside the ranges) and apply the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query

DEFAULT_COVERAGE = 0.9


@dataclass(frozen=True)
class AnswerOptions:
    """``threshold`` in (0, 1) or ``None`` (the predict config's); ``coverage`` in (0, 1); ``min_age`` in years."""

    threshold: float | None = None
    coverage: float = DEFAULT_COVERAGE
    min_age: int | None = None


async def answer_options(
    threshold: Annotated[
        float | None,
        Query(gt=0.0, lt=1.0, allow_inf_nan=False, description="decision threshold; default: the predict config's"),
    ] = None,
    coverage: Annotated[
        float,
        Query(
            gt=0.0,
            lt=1.0,
            allow_inf_nan=False,
            description="share of faces whose true age the `age_interval` should hold (calibrated models guarantee "
            "it on faces like their calibration set's)",
        ),
    ] = DEFAULT_COVERAGE,
    min_age: Annotated[
        int | None,
        Query(
            ge=0,
            le=200,
            description="age threshold in years: adds `p_at_least` = P(age >= min_age) and `at_least` = "
            "`result_value >= min_age` to every face",
        ),
    ] = None,
) -> AnswerOptions:
    return AnswerOptions(threshold, coverage, min_age)


AnswerOptionsDep = Annotated[AnswerOptions, Depends(answer_options)]
