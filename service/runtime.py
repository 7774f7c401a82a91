"""What the routes need at request time, built by the lifespan, and the FastAPI dependencies that hand it out.

Routes never reach for globals: they receive the ``Runtime`` (or a part of it) through ``Depends``, so tests can
swap the aligner with ``app.dependency_overrides[get_aligner]``. The dependencies are ``async`` because they never
block: FastAPI runs a plain ``def`` dependency in its thread pool, a hand-off per dependency per request.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from service.alignment import Aligner
from service.batching import MicroBatcher
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from service.predictor import Predictor


@dataclass
class Runtime:
    """The loaded service: ``predictor``, ``aligner`` and ``batcher`` stay ``None`` until start-up has finished.

    ``error`` holds the one-line reason when start-up failed; the service then never becomes ready.
    """

    settings: ServiceSettings
    metrics: ServiceMetrics
    detect_pool: ThreadPoolExecutor | None = None
    predictor: Predictor | None = None
    aligner: Aligner | None = None
    batcher: MicroBatcher | None = None
    error: str | None = None

    @property
    def ready(self) -> bool:
        """Loaded, warm, and the batcher still answering (a dead batcher makes the service unready)."""
        loaded = self.predictor is not None and self.batcher is not None and self.aligner is not None
        return loaded and self.batcher is not None and self.batcher.alive


async def get_runtime(request: Request) -> Runtime:
    """The app's ``Runtime``, ready or not."""
    runtime: Runtime = request.app.state.runtime
    return runtime


async def get_ready_runtime(runtime: Annotated[Runtime, Depends(get_runtime)]) -> Runtime:
    """The ``Runtime`` once the model is loaded and warm; otherwise answer 503 with the reason."""
    if not runtime.ready:
        failure = runtime.batcher.failure if runtime.batcher is not None else None
        detail = runtime.error or failure or "the model is still loading; retry in a few seconds"
        raise HTTPException(status_code=503, detail=detail, headers={"Retry-After": "5"})
    return runtime


async def get_aligner(runtime: Annotated[Runtime, Depends(get_ready_runtime)]) -> Aligner:
    """The face aligner of a ready service."""
    assert runtime.aligner is not None
    return runtime.aligner


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
ReadyRuntimeDep = Annotated[Runtime, Depends(get_ready_runtime)]
AlignerDep = Annotated[Aligner, Depends(get_aligner)]
