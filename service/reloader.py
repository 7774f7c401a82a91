"""Hot reload: on ``SIGHUP``, and every ``MODEL_POLL_SECONDS`` when set, load a newer model beside the one serving,
warm it, and swap it in.

The new model is loaded and warmed in a worker thread while the current one keeps answering; the swap is one
assignment on the event loop (``Runtime.swap``), so each request runs wholly on the model it started with. The model
replaced stops once the last request holding it has its answer. A version that cannot be loaded is logged and
skipped (``ModelSource.pick``): the current model keeps serving and readiness does not change. Requests for a reload
that arrive while one runs are merged into one more pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter, Info

from core.errors import AgeEstimationError, ModelFileError
from service.model_repository import ModelSource, chip_geometry
from service.runtime import Runtime, ServedModel
from service.settings import ModelChoice

if TYPE_CHECKING:
    from service.predictor import Predictor

logger = logging.getLogger(__name__)

RETIRE_TIMEOUT_S = 300.0
"""Longest wait for the requests still on a replaced model (a request is bounded far below this)."""

Loader = Callable[[ModelChoice], "Predictor"]
"""Loads and warms the chosen model file (blocking: it runs in a worker thread)."""


def predictor_loader(runtime: Runtime) -> Loader:
    """``load_predictor`` with the service's settings; the engine's runtime is imported when it is first called."""
    settings = runtime.settings

    def load(choice: ModelChoice) -> Predictor:
        from service.predictor import settings_loader

        return settings_loader(settings)(choice)

    return load


class ModelReloader:
    """Loads newer models from ``source`` into ``runtime`` (see the module docstring); ``swaps`` counts the swaps.

    In ``/metrics``: ``age_model_info{model_id}`` names the model serving, and ``age_model_reloads_total{outcome}``
    counts the models swapped in (``swapped``) and the versions skipped as unservable (``failed``).
    """

    def __init__(self, runtime: Runtime, source: ModelSource, load: Loader) -> None:
        self.runtime = runtime
        self.source = source
        self._load = load
        self.swaps = 0
        registry = runtime.metrics.registry
        self._serving = Info("age_model", "the model serving now", registry=registry)
        self._reloads = Counter(
            "age_model_reloads", "models swapped in, and versions skipped as unservable", ["outcome"], registry=registry
        )
        self._wanted = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._retiring: set[asyncio.Task[None]] = set()

    def request(self) -> None:
        """Ask for a reload pass (the ``SIGHUP`` handler); returns at once."""
        self._wanted.set()

    def listen(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on ``SIGHUP``; ``False`` where signals cannot be handled (not the main thread, not POSIX)."""
        try:
            loop.add_signal_handler(signal.SIGHUP, self.request)
        except (NotImplementedError, RuntimeError, ValueError, AttributeError):
            return False
        return True

    def start(self, poll_s: float | None) -> None:
        """Handle reload requests (and poll every ``poll_s`` seconds when given) until :meth:`stop`."""
        if self.runtime.predictor is not None:
            self._serving.info({"model_id": self.runtime.predictor.model_id})
        # Versions skipped at start-up count too; both series exist from the start, at 0.
        self._reloads.labels(outcome="swapped")
        self._reloads.labels(outcome="failed").inc(self.source.failures)
        self._task = asyncio.get_running_loop().create_task(self._run(poll_s), name="model-reloader")

    async def _run(self, poll_s: float | None) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wanted.wait(), poll_s)
            self._wanted.clear()
            try:
                await self.reload()
            except Exception:
                # A reload must never end the reloader (a vanished repository, a bug): the current model serves on.
                logger.exception("the model reload failed; the current model keeps serving")

    async def reload(self) -> str | None:
        """One pass: load and swap in the newest servable model if it is not the current one; return its id."""
        async with self._lock:
            current = self.runtime.served
            identity = current.predictor.identity if current is not None else None
            failed_before = self.source.failures
            try:
                predictor = await asyncio.to_thread(self.source.pick, identity, self._load_compatible)
            except AgeEstimationError as exc:
                logger.error("cannot look for a newer model: %s", exc)
                return None
            finally:
                self._reloads.labels(outcome="failed").inc(self.source.failures - failed_before)
            if predictor is None:
                return None
            previous = self.runtime.swap(await self.runtime.serve(predictor))
            self.swaps += 1
            self._reloads.labels(outcome="swapped").inc()
            self._serving.info({"model_id": predictor.model_id})
            logger.info("now serving %s", predictor.model_id)
            if previous is not None:
                task = asyncio.get_running_loop().create_task(self._retire(previous), name="retire-model")
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return predictor.model_id

    def _load_compatible(self, choice: ModelChoice) -> Predictor:
        current = self.runtime.predictor
        if current is not None and (ours := chip_geometry(current.metadata)) != chip_geometry(choice.metadata):
            raise ModelFileError(
                f"{choice.model_file}: cuts face chips differently (size, padding, detector, upsampling "
                f"{chip_geometry(choice.metadata)}, serving {ours}); restart the service to serve it"
            )
        return self._load(choice)

    async def _retire(self, served: ServedModel) -> None:
        try:
            await asyncio.wait_for(served.idle.wait(), RETIRE_TIMEOUT_S)
        except TimeoutError:
            model_id = served.predictor.model_id
            logger.warning("requests still hold %s after %.0f s; stopping it", model_id, RETIRE_TIMEOUT_S)
        finally:
            await served.batcher.stop()

    async def stop(self) -> None:
        """Stop reloading and stop the batchers of replaced models."""
        tasks = [task for task in (self._task, *self._retiring) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
