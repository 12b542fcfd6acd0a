"""Settings of a long-running server or worker process: the event loop and the collector.

Applied by the commands that serve (``serve``, ``api``, ``worker``, ``acs``), never on import:
a library that embeds headless-ops keeps its own process settings.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["run", "tune_gc"]

T = TypeVar("T")

#: Young objects between two collections of the first generation (CPython's default: 700).
GC_GEN0_THRESHOLD = 50_000


def tune_gc() -> None:
    """Collect cycles less often, and never scan what start-up loaded.

    The scheduler allocates a few dozen short-lived objects per operation, nearly all freed
    by reference counting. With CPython's default thresholds the cycle collector then ran
    about 60 times per 1,000 operations and, scanning the hundreds of thousands of objects
    that the imported libraries hold, took a quarter of the dispatch's CPU time
    (docs/benchmarks.md). ``gc.freeze()`` moves everything alive after start-up out of the
    collector's sight; the higher threshold makes a young-generation pass rarer, and each
    still takes about a millisecond.
    """
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_GEN0_THRESHOLD, gen1, gen2)


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop (what uvicorn serves the API on) when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(main)
    return uvloop.run(main)
