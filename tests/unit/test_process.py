"""The process settings of the serving commands: the collector's thresholds and freeze."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from headless_ops import process


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_tune_gc_freezes_what_is_loaded_and_raises_the_young_threshold() -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    process.tune_gc()
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (process.GC_GEN0_THRESHOLD, before[1], before[2])


def test_run_returns_the_coroutines_result() -> None:
    async def answer() -> int:
        return 42

    assert process.run(answer()) == 42
