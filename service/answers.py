"""From CORAL logits to the body of an answer, in the view asked for (``view=full`` or ``view=basic``).

``full`` is every output of each face (Cao et al. 2019, Eq. 1: ``raw_logits``, ``raw_probas``, the thresholded
tasks, the age and its distribution) with the largest face's fields but its distribution repeated at the top level,
as the contract's ``POST /predict`` has it; ``basic`` is what most clients read, the age, its interval and the box,
in a few hundred bytes. Both name the model that answered (``model_id``).

Floats are written at float32's shortest round-trip form: the model computes in float32, so a float64 printed to 17
digits (``0.12345679104328156``) only adds digits that carry nothing; each value is replaced by the float64 nearest
to its shortest float32 decimal (``0.12345679``), which JSON then prints as that decimal and which reads back as the
same float32.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from core.calibration import interval_mass
from core.distribution import age_probas, central_interval, labels_from_probas, p_at_least, probas_from_logits
from service.options import AnswerOptions
from service.schemas import Answer, BasicFace, BasicResponse, FacePrediction, FaceSummary, PredictResponse

if TYPE_CHECKING:
    from service.predictor import Predictor

MODEL_ID_HEADER = "X-Model-Id"
"""The response header naming the model that answered: the body's ``model_id``."""


def shortest_float32(values: np.ndarray) -> list:
    """``values`` (any shape) as nested lists of floats whose ``repr`` is the shortest decimal (at most 9
    significant digits) that reads back as the same float32."""
    # numpy prints each float32 with Dragon4's shortest unique digits; parsing them back gives the float64s JSON
    # encoders print with exactly those digits. Vectorised: about 1.5 us a value.
    return np.asarray(values, dtype=np.float32).astype(str).astype(np.float64).tolist()


@dataclass(frozen=True)
class Decoded:
    """The CORAL decoding of ``N`` faces: ``probas`` ``(N, K-1)`` = P(age > start_label + k), ranks ``(N,)``, the
    interval's rank bounds ``lows``/``highs`` ``(N,)`` (inclusive), and the threshold used."""

    threshold: float
    probas: np.ndarray
    ranks: np.ndarray
    lows: np.ndarray
    highs: np.ndarray


def decode(predictor: Predictor, logits: np.ndarray, options: AnswerOptions) -> Decoded:
    """Threshold the rank probabilities of ``logits`` ``(N, K-1)`` and find each face's interval for ``coverage``."""
    threshold = predictor.threshold if options.threshold is None else float(options.threshold)
    probas = probas_from_logits(logits)
    lows, highs = central_interval(probas, interval_mass(predictor.calibration, options.coverage, probas))
    return Decoded(threshold, probas, labels_from_probas(probas, threshold), lows, highs)


def _uncertain(predictor: Predictor, low: int, high: int) -> bool:
    return predictor.max_interval_width is not None and int(high - low) > predictor.max_interval_width


def full_faces(
    predictor: Predictor, boxes: Sequence[Sequence[int]], logits: np.ndarray, options: AnswerOptions
) -> list[FacePrediction]:
    """One ``FacePrediction`` per row of ``logits`` ``(N, K-1)``, with ``boxes[i]`` as its box."""
    decoded = decode(predictor, logits, options)
    start = predictor.start_label
    raw_logits, raw_probas = shortest_float32(logits), shortest_float32(decoded.probas)
    distributions = shortest_float32(age_probas(decoded.probas))
    faces = []
    for i, box in enumerate(boxes):
        age, low, high = start + int(decoded.ranks[i]), int(decoded.lows[i]), int(decoded.highs[i])
        face = FacePrediction(
            raw_logits=raw_logits[i],
            raw_probas=raw_probas[i],
            threshold=decoded.threshold,
            thresholded_probas=(decoded.probas[i] > decoded.threshold).astype(int).tolist(),
            result_value=age,
            box=[int(value) for value in box],
            age_probas=distributions[i],
            age_interval=[start + low, start + high],
            coverage=options.coverage,
            calibrated=predictor.calibration is not None,
            uncertain=_uncertain(predictor, low, high),
        )
        if options.min_age is not None:
            face.p_at_least = p_at_least(raw_probas[i], options.min_age, start)
            face.at_least = age >= options.min_age
        faces.append(face)
    return faces


def basic_faces(
    predictor: Predictor, boxes: Sequence[Sequence[int]], logits: np.ndarray, options: AnswerOptions
) -> list[BasicFace]:
    """One ``BasicFace`` per row of ``logits`` ``(N, K-1)``: the fields of :func:`full_faces`' faces that a client
    acting on the age needs."""
    decoded = decode(predictor, logits, options)
    start = predictor.start_label
    faces = []
    for i, box in enumerate(boxes):
        age, low, high = start + int(decoded.ranks[i]), int(decoded.lows[i]), int(decoded.highs[i])
        face = BasicFace(
            result_value=age,
            age_interval=[start + low, start + high],
            coverage=options.coverage,
            calibrated=predictor.calibration is not None,
            uncertain=_uncertain(predictor, low, high),
            box=[int(value) for value in box],
        )
        if options.min_age is not None:
            face.p_at_least = float(str(np.float32(p_at_least(decoded.probas[i], options.min_age, start))))
            face.at_least = age >= options.min_age
        faces.append(face)
    return faces


def build_answer(
    predictor: Predictor, boxes: Sequence[Sequence[int]], logits: np.ndarray, options: AnswerOptions
) -> Answer:
    """The body for faces ordered largest first, in ``options.view``; ``ValueError`` without any face."""
    if len(boxes) == 0:
        raise ValueError("an answer needs at least one face")
    if options.view == "basic":
        return BasicResponse(model_id=predictor.model_id, faces=basic_faces(predictor, boxes, logits, options))
    faces = full_faces(predictor, boxes, logits, options)
    # The faces were validated when built: the top level repeats the first one's fields without checking them again.
    # Its distribution stays in faces only: K more floats would make a one-face answer a sixth larger.
    largest = {name: value for name, value in dict(faces[0]).items() if name in FaceSummary.model_fields}
    return PredictResponse.model_construct(**largest, model_id=predictor.model_id, faces=faces)
