"""Micro-batching: face chips from concurrent requests share one model call.

A model call on 16 chips costs little more than on one, so the batcher holds arriving chips for at most
``max_wait_s`` (or until ``max_size`` chips are waiting), runs the model once in its own thread, and hands each
caller its rows. It waits only while other callers have announced chips (``expecting``), so an idle service adds
no delay. The model thread is separate from the detection pool so that inference never queues behind dlib.

Every caller gets an answer: its rows, the model's error, or ``BatcherUnavailableError`` (HTTP 503) when the
batcher is stopping or its collecting task has died. A dead batcher says so in ``failure``, which the service's
readiness reads, so ``/health`` stops answering 200 for a process that can no longer predict.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.errors import BatcherUnavailableError

logger = logging.getLogger(__name__)

Infer = Callable[[np.ndarray], np.ndarray]
"""The model: chips ``(N, S, S, 3)`` uint8 -> logits ``(N, K-1)`` float32, row i for chip i."""

BatchObserver = Callable[[int, float], None]
"""Told of every model call: the number of chips and the call's duration in seconds."""


class MicroBatcher:
    """Collects chips into batches of at most ``max_size``, waiting at most ``max_wait_s`` for a batch to fill.

    Use inside one event loop: ``await start()``, then ``await submit(chips)`` from any number of tasks, then
    ``await stop()``. A model error fails exactly the callers whose chips were in that batch; a failing
    ``on_batch`` observer is logged and ignored.
    """

    def __init__(self, infer: Infer, max_size: int, max_wait_s: float, on_batch: BatchObserver | None = None) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be >= 1 (got {max_size})")
        self._infer = infer
        self._max_size = max_size
        self._max_wait_s = max(0.0, max_wait_s)
        self._on_batch = on_batch
        self._pending: collections.deque[tuple[np.ndarray, asyncio.Future[np.ndarray]]] = collections.deque()
        self._expected = 0
        self._arrived: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight: list[asyncio.Future[np.ndarray]] = []
        self.failure: str | None = None
        """Why the batcher can no longer answer (stopped, or its collector died); ``None`` while it works."""

    async def start(self) -> None:
        """Start the collecting task in the running loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")
        self._task.add_done_callback(self._collector_ended)

    @property
    def alive(self) -> bool:
        """Whether submitted chips will be answered with their logits."""
        return self._task is not None and self.failure is None

    def _collector_ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            self._fail_everyone(self.failure or "the service is shutting down")
            return
        exc = task.exception()
        logger.error("the micro-batcher stopped: %r; the service cannot predict until restarted", exc, exc_info=exc)
        self._fail_everyone(f"the model batcher stopped after an internal error ({type(exc).__name__})")

    def _fail_everyone(self, reason: str) -> None:
        self.failure = self.failure or reason
        waiting = [future for _, future in self._pending] + self._in_flight
        self._pending.clear()
        self._in_flight = []
        for future in waiting:
            if not future.done():
                future.set_exception(BatcherUnavailableError(self.failure))

    async def stop(self) -> None:
        """Stop collecting, answer every waiting and in-flight caller with a 503, and release the model thread."""
        if self._task is not None:
            self.failure = self.failure or "the service is shutting down"
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._fail_everyone(self.failure or "the service is shutting down")
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    @contextlib.contextmanager
    def expecting(self) -> Iterator[None]:
        """Announce chips on their way (the caller is still decoding or detecting) for the duration of the block.

        A batch waits for more chips (up to ``max_wait_s``) only while some caller has announced them, so a lone
        request goes straight to the model. Call :meth:`enqueue` inside the block, await its result after it.
        """
        self._expected += 1
        try:
            yield
        finally:
            self._expected -= 1
            if self._arrived is not None:
                self._arrived.set()

    def enqueue(self, chips: np.ndarray) -> Awaitable[np.ndarray]:
        """Queue ``chips`` ``(n, S, S, 3)`` uint8 now; the result resolves to their logits ``(n, K-1)``."""
        if self._arrived is None or self._task is None:
            raise RuntimeError("MicroBatcher.enqueue() called before start()")
        if self.failure is not None:
            raise BatcherUnavailableError(self.failure)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in range(len(chips))]
        self._pending.extend(zip(chips, futures, strict=True))
        self._arrived.set()
        return _stacked(futures)

    async def submit(self, chips: np.ndarray) -> np.ndarray:
        """Run ``chips`` ``(n, S, S, 3)`` uint8 through the model with others; return their logits ``(n, K-1)``."""
        return await self.enqueue(chips)

    async def _collect(self) -> None:
        assert self._arrived is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._arrived.wait()
            if not self._pending:
                self._arrived.clear()
                continue
            deadline = loop.time() + self._max_wait_s
            # Waiting on an Event (not on queue.get) means a timeout can never drop an item on Python 3.11.
            while (
                len(self._pending) < self._max_size and self._expected > 0 and (remaining := deadline - loop.time()) > 0
            ):
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), remaining)
                except TimeoutError:
                    break
            batch = [self._pending.popleft() for _ in range(min(self._max_size, len(self._pending)))]
            # Until the batch is answered its futures are in no queue, so stop() or a crash must find them here.
            self._in_flight = [future for _, future in batch]
            if self._pending:
                self._arrived.set()
            else:
                self._arrived.clear()
            live = [(chip, future) for chip, future in batch if not future.cancelled()]
            if live:
                await self._run(live)

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        started = time.perf_counter()
        try:
            chips = np.stack([chip for chip, _ in batch])
            logits = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, chips)
            if len(logits) != len(batch):
                raise ValueError(f"the model answered {len(logits)} rows for {len(batch)} chips")
        except Exception as exc:
            for future in self._in_flight:
                if not future.done():
                    future.set_exception(exc)
            self._in_flight = []
            return
        for (_, future), row in zip(batch, logits, strict=True):
            if not future.done():
                future.set_result(row)
        self._in_flight = []
        if self._on_batch is not None:
            try:
                self._on_batch(len(batch), time.perf_counter() - started)
            except Exception:
                logger.exception("the batch observer failed; the batch was answered")


async def _stacked(futures: list[asyncio.Future[np.ndarray]]) -> np.ndarray:
    rows = await asyncio.gather(*futures)
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
