"""Engines and transactions, the same API over SQLite and PostgreSQL.

SQLite: every connection gets WAL, ``busy_timeout`` and the configured ``synchronous``;
Python's own transaction handling is switched off so that write transactions start with
``BEGIN IMMEDIATE`` (a deferred read-then-write would fail with "database is locked") and
reads with a plain ``BEGIN`` (one snapshot for a page and its count). Writers of one
process queue on an asyncio lock rather than on SQLite's sleeping busy handler.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from headless_ops.config import Settings

__all__ = ["Database"]


class Database:
    """The store's engines: ``write()`` and ``read()`` give transactions; ``dispose()`` closes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.effective_database_url
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        if self.dialect == "sqlite":
            path = self.url.split(":///", 1)[1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # One writer connection per process: SQLite has one write lock anyway.
            self._writer = self._sqlite_engine("BEGIN IMMEDIATE", pool_size=1)
            self._reader = self._sqlite_engine("BEGIN", pool_size=8)
        else:
            engine = create_async_engine(
                self.url,
                pool_size=settings.pg_pool_size,
                max_overflow=settings.pg_pool_size,
                pool_pre_ping=True,
            )
            self._writer = self._reader = engine

    def _sqlite_engine(self, begin: str, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=0, pool_timeout=300
        )
        pragmas = (
            "PRAGMA journal_mode=WAL",
            f"PRAGMA busy_timeout={int(self.settings.sqlite_busy_timeout_ms)}",
            f"PRAGMA synchronous={self.settings.sqlite_synchronous.upper()}",
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the driver: we emit BEGIN ourselves.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in pragmas:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _on_begin(conn: SyncConnection) -> None:
            conn.exec_driver_sql(begin)

        return engine

    @property
    def engine(self) -> AsyncEngine:
        """The engine for writes (the only one on PostgreSQL)."""
        return self._writer

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on success, rolled back on error."""
        if self._write_lock is not None:
            async with self._write_lock, self._writer.begin() as conn:
                yield conn
        else:
            async with self._writer.begin() as conn:
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (one consistent snapshot)."""
        async with self._reader.begin() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection (aiosqlite threads otherwise hang the exit)."""
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
