"""Group commit of attempt outcomes: many results, one transaction, one fsync."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime

import structlog

from headless_ops.store.scheduling import Outcome, SchedulerStore

__all__ = ["Recorder"]

log = structlog.get_logger(__name__)


class Recorder:
    """Collects outcomes and writes whatever has accumulated in one transaction.

    ``put``'s callback runs only once the outcome is committed (or refused), so an operation
    is never reported done before it is durable.
    """

    def __init__(self, store: SchedulerStore, clock: Callable[[], datetime]) -> None:
        self.store = store
        self.clock = clock
        self._queue: list[tuple[Outcome, Callable[[bool], None]]] = []
        self._more = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def start(self) -> None:
        """Start the writer task."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="headless-ops-recorder")

    async def stop(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        self._closing = True
        self._more.set()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        self._closing = False

    def put(self, outcome: Outcome, done: Callable[[bool], None]) -> None:
        """Queue ``outcome``; ``done(True)`` is called once it is committed, ``done(False)``
        if it was refused (lease lost)."""
        self._queue.append((outcome, done))
        self._more.set()

    async def _run(self) -> None:
        while True:
            await self._more.wait()
            self._more.clear()
            batch, self._queue = self._queue, []
            if not batch:
                if self._closing:
                    return
                continue
            try:
                refused = await self.store.record(self.clock(), [o for o, _ in batch])
            except Exception as exc:
                log.exception("recording outcomes failed; retrying", count=len(batch))
                # Put them back: a result is never dropped because a write failed once.
                self._queue = batch + self._queue
                self._more.set()
                await asyncio.sleep(0.5)
                del exc
                continue
            for outcome, done in batch:
                try:
                    done(outcome.op_id not in refused)
                except Exception:
                    log.exception("after recording an outcome", operation_id=outcome.op_id)
            if self._closing:
                self._more.set()  # loop once more: exit when nothing is left
