"""service.admission and service.memory: budgets refuse past their limit and give back; idle trims."""

from __future__ import annotations

import asyncio

import pytest

from service import memory
from service.admission import MemoryBudget
from service.errors import OverloadedError


def test_a_budget_refuses_past_its_limit_without_charging() -> None:
    budget = MemoryBudget(100, "bytes", "MAX_INFLIGHT_BYTES")
    budget.take(60)
    with pytest.raises(OverloadedError, match="MAX_INFLIGHT_BYTES"):
        budget.take(41)
    assert budget.used == 60
    with budget.holding(40):
        assert budget.used == 100
    budget.give(60)
    assert budget.used == 0
    assert budget.peak == 100


def test_the_trimmer_trims_once_after_activity_and_not_while_busy(monkeypatch: pytest.MonkeyPatch) -> None:
    trims: list[int] = []
    monkeypatch.setattr(memory, "trim", lambda: trims.append(1) or True)
    budget = MemoryBudget(100, "bytes", "X")

    async def scenario() -> None:
        task = asyncio.create_task(memory.trim_when_idle(budget, 0.01))
        await asyncio.sleep(0.05)
        assert trims == []  # nothing happened yet: nothing to give back
        budget.take(10)
        await asyncio.sleep(0.05)
        assert trims == []  # busy: a trim now would fight the allocations in flight
        budget.give(10)
        for _ in range(200):
            if trims:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        task.cancel()

    asyncio.run(scenario())
    assert trims == [1]


def test_malloc_settings_apply_on_glibc() -> None:
    if memory._libc() is None:
        pytest.skip("not glibc: mallopt and malloc_trim are absent")
    assert not memory.configure_malloc(0)  # 0: glibc's defaults, untouched
    assert memory.configure_malloc(64)  # as many arenas as glibc's own default on this machine: harmless here
    assert isinstance(memory.trim(), bool)
