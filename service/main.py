"""The app factory, its lifespan and the ``age-serve`` command.

Start-up: the lifespan opens the detection pool and loads the model, the dlib aligner and the micro-batcher in the
background, so ``GET /health`` answers 503 while that runs and 200 once one warm-up prediction has passed. Nothing
happens at import time. ``age-serve`` checks the predict config and the model file's metadata before starting
uvicorn, so a missing, corrupt or mismatched model ends the process with one line and exit status 1. Once serving,
``SIGHUP`` (and ``MODEL_POLL_SECONDS``) loads a newer model version beside the current one (``service.reloader``).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from core.errors import AgeEstimationError
from service.admission import MemoryBudget
from service.alignment import Aligner, aligner_from_metadata
from service.auth import ApiKeys
from service.connections import AcceptErrorFilter, guarded_h11, raise_open_file_limit
from service.detection import DetectionPool
from service.errors import install_error_handlers
from service.logs import logging_config
from service.memory import configure_malloc, trim_when_idle
from service.metrics import ServiceMetrics
from service.middleware import install_middleware
from service.model_repository import ModelSource
from service.reloader import ModelReloader, predictor_loader
from service.routes import batch, inference_v2, model_info, page, predict, probes, status
from service.runtime import Runtime
from service.settings import ServiceSettings, load_settings

if TYPE_CHECKING:
    from service.predictor import Predictor

logger = logging.getLogger(__name__)

FatalHandler = Callable[[str], None]
"""Called with the one-line reason when start-up fails (``age-serve`` stops the server with it)."""


def create_app(settings: ServiceSettings | None = None, on_fatal: FatalHandler | None = None) -> FastAPI:
    """Build the app. ``settings`` default to the environment; ``on_fatal`` is told if loading the model fails."""
    runtime = Runtime(settings=settings or load_settings(), metrics=ServiceMetrics())
    runtime.reloader = ModelReloader(runtime, ModelSource(runtime.settings), predictor_loader(runtime))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = runtime.settings
        runtime.detect_pool = DetectionPool(limits.detect_workers, limits.decode_timeout_s, limits.max_inflight_pixels)
        trimming = asyncio.create_task(trim_when_idle(app.state.inflight_bytes, limits.memory_trim_s), name="trim")
        # Before the load, so that a SIGHUP during it is a reload request once serving, not the end of the process.
        reloader, loop = runtime.reloader, asyncio.get_running_loop()
        listening = reloader is not None and reloader.listen(loop)
        loading = asyncio.create_task(_start(runtime, on_fatal), name="load-model")
        try:
            yield
        finally:
            loading.cancel()
            trimming.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            if listening:
                loop.remove_signal_handler(signal.SIGHUP)
            if reloader is not None:
                await reloader.stop()
            if runtime.batcher is not None:
                await runtime.batcher.stop()
            runtime.detect_pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="CORAL age estimation",
        summary="Estimates the age of every face in a photo (CORAL ordinal regression).",
        version="0.1.0",
        lifespan=lifespan,
        # /docs is served by routes.page from local files; ReDoc would load from a CDN, so it is off.
        docs_url=None,
        redoc_url=None,
        # No trailing-slash redirects: Starlette builds their Location from the Host header (an open redirect).
        redirect_slashes=False,
    )
    app.state.runtime = runtime
    app.state.inflight_bytes = MemoryBudget(runtime.settings.max_inflight_bytes, "body bytes", "MAX_INFLIGHT_BYTES")
    install_error_handlers(app)
    # Request ids, logs, metrics, CORS, gzip, API keys, the guard: their order matters, so they are added in one place.
    install_middleware(app, runtime)
    app.include_router(predict.router)
    app.include_router(batch.router)
    app.include_router(probes.router)
    app.include_router(model_info.router)
    app.include_router(status.router)
    app.include_router(inference_v2.router)
    app.include_router(page.router)
    app.mount("/static", StaticFiles(directory=page.STATIC_DIR), name="static")
    return app


async def _start(runtime: Runtime, on_fatal: FatalHandler | None) -> None:
    """Load, warm up and publish the model, aligner and batcher; on failure record the reason."""
    settings = runtime.settings
    try:
        model_file, predictor, aligner = await asyncio.to_thread(_load, runtime)
        served = await runtime.serve(predictor)
        await _give_every_worker_an_aligner(runtime.detect_pool, aligner, settings.detect_workers)
    except (AgeEstimationError, OSError, ValueError, threading.BrokenBarrierError) as exc:
        _fail(runtime, on_fatal, f"cannot start: {exc}")
        return
    except Exception as exc:
        # Anything else (dlib's RuntimeError on a corrupt landmark file, TensorFlow running out of memory in the
        # warm-up) must end the process too: a service stuck at "still loading" would look healthy to nobody.
        logger.debug("start-up failed", exc_info=exc)
        _fail(runtime, on_fatal, f"cannot start: {type(exc).__name__}: {exc}")
        return
    runtime.aligner = aligner
    runtime.swap(served)
    logger.info("ready: serving %s (%s) on %s", predictor.model_id, model_file, predictor.device)
    if runtime.reloader is not None:
        runtime.reloader.start(settings.model_poll_seconds)


def _fail(runtime: Runtime, on_fatal: FatalHandler | None, reason: str) -> None:
    runtime.error = " ".join(reason.split())
    if on_fatal is not None:
        on_fatal(runtime.error)
    else:
        logger.error("%s", runtime.error)


def _load(runtime: Runtime) -> tuple[Path, Predictor, Aligner]:
    # TensorFlow is imported by the loader, not at module level, so that `age-serve` refuses a bad config in a blink.
    assert runtime.reloader is not None
    predictor = runtime.reloader.source.load_first(predictor_loader(runtime))
    assert predictor.identity is not None
    return predictor.identity.file, predictor, aligner_from_metadata(predictor.metadata, runtime.settings.max_faces)


async def _give_every_worker_an_aligner(pool: ThreadPoolExecutor | None, aligner: Aligner, workers: int) -> None:
    """Run one tiny alignment on each detection thread, so no request pays for loading dlib's models."""
    # The barrier keeps every task busy until all have started, which makes the pool start all its threads.
    barrier = threading.Barrier(workers)
    blank = np.zeros((64, 64, 3), dtype=np.uint8)

    def warm() -> None:
        barrier.wait(timeout=60)
        aligner.align(blank)

    loop = asyncio.get_running_loop()
    await asyncio.gather(*(loop.run_in_executor(pool, warm) for _ in range(workers)))


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="age-serve",
        description="Serve the age-estimation REST API and web page (environment variables: see README).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument("--model", type=Path, help="the .h5 to serve (default: MODEL_PATH, else the config's)")
    parser.add_argument("--config", type=Path, help="predict config (default: PREDICT_CONFIG, else configs/...)")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """``age-serve``: check the config and model, then serve until interrupted. Returns the exit status."""
    import uvicorn

    args = _parse_args(argv)
    try:
        settings = load_settings(model_path=args.model, predict_config=args.config)
        ModelSource(settings).preflight()
        ApiKeys.from_settings(settings)
    except AgeEstimationError as exc:
        print(f"age-serve: {exc}", file=sys.stderr)
        return 1
    failure: list[str] = []

    def stop(reason: str) -> None:
        failure.append(reason)
        server.should_exit = True

    # Before any thread exists: arenas already created would stay.
    configure_malloc(settings.malloc_arena_max)
    app = create_app(settings, on_fatal=stop)
    # The service's own loggers ("ready", tracebacks of bugs) print like uvicorn's, at its level, as LOG_FORMAT says.
    log_config = logging_config(settings.log_format, args.log_level)
    logging.getLogger("asyncio").addFilter(AcceptErrorFilter())
    # Room for MAX_CONNECTIONS sockets plus the model's and dlib's files.
    raise_open_file_limit(settings.max_connections + 256)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        log_config=log_config,
        # service.logs writes one line per request, with its duration and model, instead.
        access_log=False,
        http=guarded_h11(settings.head_timeout_s, settings.max_connections, settings.max_header_bytes),
        timeout_keep_alive=max(1, round(settings.keep_alive_s)),
        timeout_graceful_shutdown=round(settings.shutdown_timeout_s),
        # A fallback only: the protocol answers 431 past MAX_HEADER_BYTES before h11 sees the bytes.
        h11_max_incomplete_event_size=settings.max_header_bytes + 8 * 1024,
    )
    server = uvicorn.Server(config)
    server.run()
    if failure:
        print(f"age-serve: {failure[0]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
