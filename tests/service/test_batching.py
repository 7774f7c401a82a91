"""The micro-batcher: concurrent chips share model calls, each caller gets its own rows, errors reach them all."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from service.batching import MicroBatcher


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
    results, sizes = _run(max_size=32, max_wait_s=0.05, groups=[1, 3, 2, 1])
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
