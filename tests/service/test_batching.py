"""The micro-batcher: concurrent chips share model calls, each caller gets its own rows, errors reach them all."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from service.batching import MicroBatcher
from service.errors import BatcherUnavailableError


def _infer(chips: np.ndarray) -> np.ndarray:
    """Fake model: one row per chip, [mean pixel, chip id], so a caller can check it got its own rows back."""
    flat = chips.reshape(len(chips), -1).astype(np.float32)
    return np.stack([flat.mean(axis=1), flat[:, 0]], axis=1)


def _chips(first_id: int, n: int) -> np.ndarray:
    chips = np.zeros((n, 4, 4, 3), dtype=np.uint8)
    chips.reshape(n, -1)[:, 0] = np.arange(first_id, first_id + n)
    return chips


def _run(max_size: int, max_wait_s: float, groups: list[int]) -> tuple[list[np.ndarray], list[int]]:
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(_infer, max_size, max_wait_s, on_batch=lambda size, _: sizes.append(size))
        await batcher.start()
        try:
            starts = np.cumsum([0, *groups[:-1]])
            return await asyncio.gather(*(batcher.submit(_chips(s, n)) for s, n in zip(starts, groups, strict=True)))
        finally:
            await batcher.stop()

    return asyncio.run(scenario()), sizes


def test_concurrent_submissions_share_one_call_and_get_their_own_rows() -> None:
    # Callers announce their chips (expecting) and enqueue them a little apart, as requests still detecting do:
    # the first batch must wait for the announced ones instead of running alone.
    sizes: list[int] = []
    groups = [1, 3, 2, 1]

    async def caller(batcher: MicroBatcher, first_id: int, n: int, delay_s: float) -> np.ndarray:
        with batcher.expecting():
            await asyncio.sleep(delay_s)
            rows = batcher.enqueue(_chips(first_id, n))
        return await rows

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(_infer, 32, max_wait_s=10.0, on_batch=lambda size, _: sizes.append(size))
        await batcher.start()
        try:
            starts = np.cumsum([0, *groups[:-1]])
            callers = (caller(batcher, s, n, 0.02 * i) for i, (s, n) in enumerate(zip(starts, groups, strict=True)))
            return await asyncio.wait_for(asyncio.gather(*callers), timeout=5)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert sizes == [7]
    ids = [list(result[:, 1].astype(int)) for result in results]
    assert ids == [[0], [1, 2, 3], [4, 5], [6]]


def test_batches_never_exceed_max_size() -> None:
    results, sizes = _run(max_size=4, max_wait_s=0.05, groups=[3, 3, 3, 1])
    assert max(sizes) <= 4
    assert sum(sizes) == 10
    assert [len(result) for result in results] == [3, 3, 3, 1]


def test_zero_wait_still_answers_everyone() -> None:
    results, sizes = _run(max_size=8, max_wait_s=0.0, groups=[2, 2])
    assert sum(sizes) == 4
    assert [list(result[:, 1].astype(int)) for result in results] == [[0, 1], [2, 3]]


def test_a_model_error_fails_the_callers_of_that_batch_and_the_batcher_survives() -> None:
    calls = 0

    def flaky(chips: np.ndarray) -> np.ndarray:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("model exploded")
        return _infer(chips)

    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(flaky, 8, 0.01)
        await batcher.start()
        try:
            with pytest.raises(RuntimeError, match="exploded"):
                await batcher.submit(_chips(0, 2))
            return await batcher.submit(_chips(5, 1))
        finally:
            await batcher.stop()

    assert asyncio.run(scenario())[0, 1] == 5


def test_submit_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="before start"):
        asyncio.run(MicroBatcher(_infer, 4, 0.0).submit(_chips(0, 1)))


def test_a_lone_request_does_not_wait_for_company() -> None:
    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(_infer, 8, max_wait_s=600.0)
        await batcher.start()
        try:
            # Nobody announced more chips, so the 600 s window must not be used.
            return await asyncio.wait_for(batcher.submit(_chips(0, 1)), timeout=30)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario())[0, 1] == 0


def test_announced_chips_are_waited_for_and_join_the_batch() -> None:
    sizes: list[int] = []

    async def scenario() -> list[np.ndarray]:
        batcher = MicroBatcher(_infer, 8, max_wait_s=600.0, on_batch=lambda size, _: sizes.append(size))
        await batcher.start()

        async def caller(first_id: int, detect_s: float) -> np.ndarray:
            with batcher.expecting():
                await asyncio.sleep(detect_s)
                waiting = batcher.enqueue(_chips(first_id, 1))
            return await waiting

        try:
            return await asyncio.wait_for(asyncio.gather(caller(0, 0.0), caller(1, 0.2)), timeout=30)
        finally:
            await batcher.stop()

    results = asyncio.run(scenario())
    assert sizes == [2], "the first chip waited for the announced second one"
    assert [int(result[0, 1]) for result in results] == [0, 1]


def test_stop_answers_the_callers_of_a_batch_in_flight() -> None:
    release = threading.Event()
    in_model = threading.Event()

    def slow(chips: np.ndarray) -> np.ndarray:
        in_model.set()
        release.wait(10)
        return _infer(chips)

    async def scenario() -> None:
        batcher = MicroBatcher(slow, 8, 0.0)
        await batcher.start()
        waiting = asyncio.ensure_future(batcher.submit(_chips(0, 2)))
        assert await asyncio.to_thread(in_model.wait, 10), "the batch never reached the model thread"
        await batcher.stop()
        release.set()
        with pytest.raises(BatcherUnavailableError, match="shutting down"):
            await asyncio.wait_for(waiting, timeout=5)
        assert not batcher.alive

    asyncio.run(scenario())


def test_a_dead_collector_fails_its_callers_and_says_it_is_dead() -> None:
    async def scenario() -> None:
        batcher = MicroBatcher(_infer, 8, 0.0)

        async def crash(batch: object) -> None:
            raise ZeroDivisionError("bug in the collector")

        batcher._run = crash  # type: ignore[method-assign]
        await batcher.start()
        try:
            with pytest.raises(BatcherUnavailableError, match="internal error"):
                await asyncio.wait_for(batcher.submit(_chips(0, 1)), timeout=5)
            assert not batcher.alive
            assert batcher.failure is not None
            with pytest.raises(BatcherUnavailableError):
                await asyncio.wait_for(batcher.submit(_chips(1, 1)), timeout=5)
        finally:
            await batcher.stop()

    asyncio.run(scenario())


def test_chips_that_cannot_be_stacked_fail_their_batch_only() -> None:
    async def scenario() -> np.ndarray:
        batcher = MicroBatcher(_infer, 8, 1.0)
        await batcher.start()
        try:
            with batcher.expecting():
                odd = batcher.enqueue(np.zeros((1, 5, 5, 3), np.uint8))
                with batcher.expecting():
                    usual = batcher.enqueue(_chips(0, 1))
            results = await asyncio.wait_for(asyncio.gather(odd, usual, return_exceptions=True), timeout=5)
            assert all(isinstance(result, ValueError) for result in results)
            assert batcher.alive
            return await asyncio.wait_for(batcher.submit(_chips(7, 1)), timeout=5)
        finally:
            await batcher.stop()

    assert asyncio.run(scenario())[0, 1] == 7


def test_a_failing_batch_observer_does_not_lose_the_answer() -> None:
    def observer(size: int, seconds: float) -> None:
        raise RuntimeError("observer bug")

    async def scenario() -> tuple[np.ndarray, bool]:
        batcher = MicroBatcher(_infer, 8, 0.0, on_batch=observer)
        await batcher.start()
        try:
            first = await asyncio.wait_for(batcher.submit(_chips(3, 1)), timeout=5)
            await asyncio.wait_for(batcher.submit(_chips(4, 1)), timeout=5)
            return first, batcher.alive
        finally:
            await batcher.stop()

    first, alive = asyncio.run(scenario())
    assert first[0, 1] == 3
    assert alive
