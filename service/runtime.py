"""What the routes need at request time, built by the lifespan, and the FastAPI dependencies that hand it out.

Routes never reach for globals: they receive the ``Runtime`` (or a part of it) through ``Depends``, so tests can
swap the aligner with ``app.dependency_overrides[get_aligner]``. The dependencies are ``async`` because they never
block: FastAPI runs a plain ``def`` dependency in its thread pool, a hand-off per dependency per request.

The model and its micro-batcher form one ``ServedModel``, swapped as a whole when a new version is loaded: a request
holds the one it started with (``Runtime.use``) until its answer is built, and a replaced model's batcher stops only
once no request holds it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from service.alignment import Aligner
from service.batching import MicroBatcher
from service.errors import BatcherUnavailableError
from service.metrics import ServiceMetrics
from service.settings import ServiceSettings

if TYPE_CHECKING:
    from service.predictor import Predictor
    from service.reloader import ModelReloader


@dataclass(eq=False)
class ServedModel:
    """A loaded model and the micro-batcher that runs it; ``users`` counts the requests holding it."""

    predictor: Predictor
    batcher: MicroBatcher
    users: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()


@dataclass
class Runtime:
    """The loaded service: ``predictor``, ``aligner`` and ``batcher`` stay ``None`` until start-up has finished.

    ``error`` holds the one-line reason when start-up failed; the service then never becomes ready.
    """

    settings: ServiceSettings
    metrics: ServiceMetrics
    detect_pool: ThreadPoolExecutor | None = None
    served: ServedModel | None = None
    aligner: Aligner | None = None
    error: str | None = None
    reloader: ModelReloader | None = None

    @property
    def predictor(self) -> Predictor | None:
        """The model serving now (a request keeps the one it started with: use :meth:`use`)."""
        return self.served.predictor if self.served is not None else None

    @property
    def batcher(self) -> MicroBatcher | None:
        """The micro-batcher of the model serving now."""
        return self.served.batcher if self.served is not None else None

    @contextlib.contextmanager
    def use(self) -> Iterator[ServedModel]:
        """Hold the model serving now for one request: a swap meanwhile does not stop it under the request."""
        served = self.served
        if served is None:
            raise BatcherUnavailableError("the model is still loading; retry in a few seconds")
        served.users += 1
        served.idle.clear()
        try:
            yield served
        finally:
            served.users -= 1
            if served.users == 0:
                served.idle.set()

    async def serve(self, predictor: Predictor) -> ServedModel:
        """Start a micro-batcher for ``predictor`` (not yet serving: see :meth:`swap`)."""
        settings = self.settings
        batcher = MicroBatcher(
            predictor.logits,
            max_size=settings.batch_max_size,
            max_wait_s=settings.batch_max_wait_ms / 1000.0,
            on_batch=self.metrics.observe_batch,
        )
        await batcher.start()
        return ServedModel(predictor, batcher)

    def swap(self, served: ServedModel) -> ServedModel | None:
        """Serve ``served`` from the next request on; return the model it replaces (still held by its requests)."""
        previous, self.served = self.served, served
        return previous

    @property
    def ready(self) -> bool:
        """Loaded, warm, and the batcher still answering (a dead batcher makes the service unready)."""
        batcher = self.batcher
        return self.predictor is not None and self.aligner is not None and batcher is not None and batcher.alive


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
