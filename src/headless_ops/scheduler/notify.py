"""Wake-ups between processes: PostgreSQL ``LISTEN``; SQLite relies on the safety poll."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import psycopg
import structlog

from headless_ops.store.scheduling import WAKE_CHANNEL

__all__ = ["listen_for_wakeups"]

log = structlog.get_logger(__name__)


async def listen_for_wakeups(url: str, wake: Callable[[], None], me: str = "") -> None:
    """Call ``wake`` on every NOTIFY of the wake channel, except those whose payload is
    ``me`` (a worker's own: it woke itself already); reconnects until cancelled."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
                await conn.execute(f"LISTEN {WAKE_CHANNEL}")
                wake()  # anything sent while we were not listening
                async for note in conn.notifies():
                    if not me or note.payload != me:
                        wake()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("LISTEN connection lost; retrying", error=type(exc).__name__)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(1.0)
