"""Wake-ups between processes (PostgreSQL): a worker hears every NOTIFY of the wake channel
except its own, which it has acted on already."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
from sqlalchemy import func, select

from headless_ops.api.runtime import Runtime
from headless_ops.scheduler.notify import listen_for_wakeups
from headless_ops.store.scheduling import WAKE_CHANNEL


async def test_a_worker_skips_its_own_notifications(runtime: Runtime) -> None:
    if runtime.db.dialect != "postgresql":
        pytest.skip("SQLite has no NOTIFY")
    woken = asyncio.Queue[None]()
    listener = asyncio.create_task(
        listen_for_wakeups(runtime.db.url, lambda: woken.put_nowait(None), "worker-a")
    )
    try:
        await asyncio.wait_for(woken.get(), 5)  # the wake-up on (re)connecting

        async def notify(payload: str) -> None:
            async with runtime.db.write() as conn:
                await conn.execute(select(func.pg_notify(WAKE_CHANNEL, payload)))

        await notify("worker-a")
        await notify("worker-b")
        await notify("")
        await asyncio.wait_for(woken.get(), 5)
        await asyncio.wait_for(woken.get(), 5)
        await asyncio.sleep(0.3)
        assert woken.empty()  # worker-a's own notification woke nothing
    finally:
        listener.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await listener
