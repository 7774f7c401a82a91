"""Response bodies of the HTTP API (and of ``age-demo``'s JSON files, which are the same ``PredictResponse``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class FacePrediction(BaseModel):
    """The CORAL output for one face (Cao et al. 2019, Eq. 1).

    ``raw_logits`` and ``raw_probas`` hold the K-1 task outputs, ``raw_probas[k] = P(age > start_label + k)``
    (non-increasing in k); ``thresholded_probas[k] = 1`` iff ``raw_probas[k] > threshold``; ``result_value`` is
    ``start_label + sum(thresholded_probas)``, in years. ``box`` is ``[left, top, right, bottom]`` in pixels of the
    upright (EXIF-rotated) image.
    """

    raw_logits: list[float]
    raw_probas: list[float]
    threshold: float = Field(gt=0.0, lt=1.0)
    thresholded_probas: list[int]
    result_value: int
    box: list[int] = Field(min_length=4, max_length=4)


class PredictResponse(FacePrediction):
    """``POST /predict``: the largest face's fields at the top level, and every face, largest first, in ``faces``."""

    faces: list[FacePrediction]


class HealthResponse(BaseModel):
    """``GET /health`` once the model is loaded and warm."""

    status: str
    model: dict[str, Any]
    device: str


class ErrorResponse(BaseModel):
    """Every error: one human-readable line."""

    detail: str
