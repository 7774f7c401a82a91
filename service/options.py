"""The query parameters that shape an answer (``threshold``, ``coverage``, ``min_age``, ``view``), as one FastAPI
dependency.

Every route that answers with face predictions takes ``AnswerOptionsDep``, so ``/predict`` and its batch variant
describe, validate (422 outside the ranges) and apply the same parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

from fastapi import Depends, Query

DEFAULT_COVERAGE = 0.9

View = Literal["basic", "full"]
"""``full``: every CORAL output of each face; ``basic``: the age, its interval and the box (a few hundred bytes)."""


@dataclass(frozen=True)
class AnswerOptions:
    """``threshold`` in (0, 1) or ``None`` (the predict config's); ``coverage`` in (0, 1); ``min_age`` in years;
    ``view`` the shape of the body."""

    threshold: float | None = None
    coverage: float = DEFAULT_COVERAGE
    min_age: int | None = None
    view: View = "full"


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
    view: Annotated[
        View,
        Query(
            description="`full` (default): every face's logits, probabilities and distribution besides its age; "
            "`basic`: only `result_value`, `age_interval`, `coverage`, `calibrated`, `uncertain`, `box` (and "
            "`p_at_least`, `at_least` with `min_age`) per face"
        ),
    ] = "full",
) -> AnswerOptions:
    return AnswerOptions(threshold, coverage, min_age, view)


AnswerOptionsDep = Annotated[AnswerOptions, Depends(answer_options)]
