"""Micro-batching: face chips from concurrent requests share one model call.

A model call on 16 chips costs little more than on one, so the batcher holds arriving chips for at most
``max_wait_s`` (or until ``max_size`` chips are waiting), runs the model once in its own thread, and hands each
caller its rows. It waits only while other callers have announced chips (``expecting``), so an idle service adds
no delay. The model thread is separate from the detection pool so that inference never queues behind dlib.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

Infer = Callable[[np.ndarray], np.ndarray]
"""The model: chips ``(N, S, S, 3)`` uint8 -> logits ``(N, K-1)`` float32, row i for chip i."""

BatchObserver = Callable[[int, float], None]
"""Told of every model call: the number of chips and the call's duration in seconds."""


class MicroBatcher:
    """Collects chips into batches of at most ``max_size``, waiting at most ``max_wait_s`` for a batch to fill.

    Use inside one event loop: ``await start()``, then ``await submit(chips)`` from any number of tasks, then
    ``await stop()``. A model error fails exactly the callers whose chips were in that batch.
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

    async def start(self) -> None:
        """Start the collecting task in the running loop."""
        self._arrived = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self._task = asyncio.get_running_loop().create_task(self._collect(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop collecting, fail whatever is still waiting, and release the model thread."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        while self._pending:
            _, future = self._pending.popleft()
            if not future.done():
                future.set_exception(RuntimeError("the service is shutting down"))
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
            if self._pending:
                self._arrived.set()
            else:
                self._arrived.clear()
            live = [(chip, future) for chip, future in batch if not future.cancelled()]
            if live:
                await self._run(live)

    async def _run(self, batch: list[tuple[np.ndarray, asyncio.Future[np.ndarray]]]) -> None:
        chips = np.stack([chip for chip, _ in batch])
        started = time.perf_counter()
        try:
            logits = await asyncio.get_running_loop().run_in_executor(self._executor, self._infer, chips)
        except Exception as exc:
            for _, future in batch:
                if not future.done():
                    future.set_exception(exc)
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), time.perf_counter() - started)
        for (_, future), row in zip(batch, logits, strict=True):
            if not future.done():
                future.set_result(row)


async def _stacked(futures: list[asyncio.Future[np.ndarray]]) -> np.ndarray:
    rows = await asyncio.gather(*futures)
    return np.stack(rows) if rows else np.zeros((0, 0), dtype=np.float32)
