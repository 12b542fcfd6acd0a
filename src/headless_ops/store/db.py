"""Engines and transactions, the same API over SQLite and PostgreSQL.

SQLite: every connection gets WAL, ``busy_timeout`` and the configured ``synchronous``;
Python's own transaction handling is switched off so that write transactions start with
``BEGIN IMMEDIATE`` (a deferred read-then-write would fail with "database is locked") and
reads with a plain ``BEGIN`` (one snapshot for a page and its count). Writers of one
process queue on an asyncio lock rather than on SQLite's sleeping busy handler.

SQLite writes are group-committed: the ``write()`` blocks that queue up while one commit
is being fsynced each run in a savepoint of one shared transaction, and that transaction
commits once for all of them; every ``write()`` returns only after the commit that holds
its changes (with the configured ``synchronous``), so nothing is acknowledged earlier than
before, and an error rolls back its own block only.

SQLite connections are aiosqlite's with fewer round trips to their threads (see
``_FewHopsSqlite``): under load every round trip waits for a turn of the busy event loop,
and it was those round trips, not SQLite, that bounded the API's throughput.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import aiosqlite
from sqlalchemy import event, text
from sqlalchemy.engine import Connection as SyncConnection
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncTransaction,
    create_async_engine,
)

from headless_ops.config import Settings
from headless_ops.store.types import json_dumps, json_loads

__all__ = ["Database"]

#: Statements that only move within a transaction already held: they never wait, never fsync.
_LOCAL_SQL = ("SAVEPOINT", "RELEASE", "ROLLBACK")


class _FewHopsSqlite(aiosqlite.Connection):
    """aiosqlite that sends to its thread only what can take time.

    aiosqlite hands every call — creating a cursor, executing, fetching, closing it — to the
    connection's thread and back: four round trips for one SELECT, and under load each one
    waits for a turn of the busy event loop. Here the bookkeeping calls run where they are
    made, and each statement is one round trip that also fetches its rows (SQLAlchemy fetches
    them all right away anyway). What runs on the loop's thread, besides bookkeeping:

    - ``SAVEPOINT``/``RELEASE``/``ROLLBACK``: they work within a transaction already held;
    - ``BEGIN``, tried without waiting; only when another process holds the write lock does it
      wait, on the thread, for up to ``busy_timeout``;
    - for a reader (``read_only``), its ``COMMIT`` (nothing to write);
    - with ``inline=True`` (``Database.lookup()``), the statements themselves: single indexed
      reads, which never wait in WAL mode and take microseconds.

    ``COMMIT`` of a write transaction (the fsync) and every other statement go to the thread.
    A connection is used by one task at a time (the pool hands it out), so the two threads
    never use it at once.
    """

    def __init__(self, *args: Any, read_only: bool, inline: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_only = read_only
        self._inline = inline
        #: Rows fetched on the thread together with their statement, by cursor.
        self._fetched: dict[int, list[Any]] = {}

    async def _execute(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        owner = getattr(fn, "__self__", None)
        name = getattr(fn, "__name__", "")
        conn = self._connection
        if conn is None:
            return await self._on_thread(fn, *args, **kwargs)
        if isinstance(owner, sqlite3.Cursor):
            if name in ("execute", "executemany") and args and isinstance(args[0], str):
                return await self._statement(owner, fn, args[0], *args[1:], **kwargs)
            if name in ("fetchall", "fetchmany", "fetchone") and id(owner) in self._fetched:
                return self._from_fetched(owner, name, *args, **kwargs)
            if name == "close":
                self._fetched.pop(id(owner), None)
            return fn(*args, **kwargs)  # close, and fetching from a cursor read here
        nothing_to_write = self._read_only or not conn.in_transaction
        if owner is conn and (
            name in ("cursor", "rollback") or (name == "commit" and nothing_to_write)
        ):
            return fn(*args, **kwargs)
        return await self._on_thread(fn, *args, **kwargs)

    async def _statement(
        self, cursor: sqlite3.Cursor, fn: Callable[..., Any], sql: str, *args: Any, **kwargs: Any
    ) -> Any:
        # A cursor's id may be reused once it is gone: rows kept for it are not this one's.
        self._fetched.pop(id(cursor), None)
        head = sql.lstrip()[:9].upper()
        if head.startswith("BEGIN"):
            try:
                return self._without_waiting(fn, sql, *args, **kwargs)
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorname not in ("SQLITE_BUSY", "SQLITE_LOCKED"):
                    raise
            return await self._on_thread(fn, sql, *args, **kwargs)
        if self._inline or head.startswith(_LOCAL_SQL) or (self._read_only and head == "COMMIT"):
            return fn(sql, *args, **kwargs)
        return await self._on_thread(self._execute_and_fetch, cursor, fn, sql, *args, **kwargs)

    def _execute_and_fetch(
        self, cursor: sqlite3.Cursor, fn: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Any:
        """On the thread: the statement and, if it returns rows, all of them."""
        result = fn(*args, **kwargs)
        if cursor.description is not None:
            self._fetched[id(cursor)] = cursor.fetchall()
        return result

    def _from_fetched(self, cursor: sqlite3.Cursor, name: str, *args: Any, **kwargs: Any) -> Any:
        rows = self._fetched[id(cursor)]
        if name == "fetchall":
            del self._fetched[id(cursor)]
            return rows
        if name == "fetchone":
            return rows.pop(0) if rows else None
        size = args[0] if args else kwargs.get("size", cursor.arraysize)
        taken, self._fetched[id(cursor)] = rows[:size], rows[size:]
        return taken

    async def _on_thread(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        # aiosqlite's own method is untyped.
        return await super()._execute(fn, *args, **kwargs)  # type: ignore[no-untyped-call]

    def _without_waiting(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` on this thread with SQLite's busy timeout at 0 (SQLITE_BUSY at once)."""
        conn = self._conn
        (timeout,) = conn.execute("PRAGMA busy_timeout").fetchone()
        conn.execute("PRAGMA busy_timeout=0")
        try:
            return fn(*args, **kwargs)
        finally:
            conn.execute(f"PRAGMA busy_timeout={int(timeout)}")


@dataclass(eq=False)
class _Batch:
    """One shared SQLite write transaction and the ``write()`` blocks waiting for its commit."""

    conn: AsyncConnection
    tx: AsyncTransaction
    committed: asyncio.Future[None]
    flush: asyncio.Task[None] | None = None
    broken: BaseException | None = None


class Database:
    """The store's engines: ``write()`` and ``read()`` give transactions; ``dispose()`` closes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.effective_database_url
        self.dialect = "sqlite" if self.url.startswith("sqlite") else "postgresql"
        self._write_lock = asyncio.Lock() if self.dialect == "sqlite" else None
        #: The open shared write transaction (SQLite), if any, and the commits under way.
        self._batch: _Batch | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        if self.dialect == "sqlite":
            path = self.url.split(":///", 1)[1]
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # One writer connection per process: SQLite has one write lock anyway.
            self._writer = self._sqlite_engine("BEGIN IMMEDIATE", pool_size=1)
            self._reader = self._sqlite_engine("BEGIN", pool_size=8, read_only=True)
            # Autocommit (no BEGIN): one statement is its own consistent snapshot.
            self._lookup = self._sqlite_engine(None, pool_size=2, read_only=True, inline=True)
        else:
            engine = create_async_engine(
                self.url,
                pool_size=settings.pg_pool_size,
                max_overflow=settings.pg_pool_size,
                pool_pre_ping=True,
                # psycopg's JSON and JSONB adapters use these too.
                json_serializer=json_dumps,
                json_deserializer=json_loads,
            )
            self._writer = self._reader = self._lookup = engine

    def _sqlite_engine(
        self, begin: str | None, pool_size: int, *, read_only: bool = False, inline: bool = False
    ) -> AsyncEngine:
        path = self.url.split(":///", 1)[1]

        async def connect() -> aiosqlite.Connection:
            # check_same_thread: opened on the connection's thread, partly used on the loop's.
            conn = _FewHopsSqlite(
                partial(sqlite3.connect, path, check_same_thread=False),
                64,
                read_only=read_only,
                inline=inline,
            )
            thread: Any = getattr(conn, "_thread", conn)  # aiosqlite < 0.22: itself
            thread.daemon = True  # as SQLAlchemy does for the connections it opens
            return await conn

        options: dict[str, Any] = {
            "async_creator": connect,
            "json_serializer": json_dumps,
            "json_deserializer": json_loads,
        }
        engine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=0, pool_timeout=300, **options
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

        if begin is not None:

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
        """A write transaction, committed on success, rolled back on error.

        On return its changes are committed. On SQLite the commit may be shared with the
        other writers that queued meanwhile (see the module's docstring); an error in this
        block rolls back this block only.
        """
        if self._write_lock is None:
            async with self._writer.begin() as conn:
                yield conn
            return
        async with self._write_lock:
            batch = self._batch
            if batch is None:
                batch = self._batch = await self._open_batch()
            savepoint = await batch.conn.begin_nested()
            try:
                yield batch.conn
            except BaseException as exc:
                try:
                    await savepoint.rollback()
                except BaseException as rollback_error:
                    # The shared transaction cannot go on: none of it will be committed.
                    batch.broken = rollback_error
                    raise exc from rollback_error
                finally:
                    # Even with no member left to wait for it, the transaction must end.
                    self._start_flush(batch)
                raise
            try:
                await savepoint.commit()
            except BaseException as exc:
                batch.broken = exc
                self._start_flush(batch)
                raise
            self._start_flush(batch)
        # Shielded: a caller cancelled now must not cancel the others' commit.
        await asyncio.shield(batch.committed)

    async def _open_batch(self) -> _Batch:
        conn = await self._writer.connect()
        try:
            tx = await conn.begin()
        except BaseException:
            await conn.close()
            raise
        return _Batch(conn, tx, asyncio.get_running_loop().create_future())

    def _start_flush(self, batch: _Batch) -> None:
        if batch.flush is None:
            batch.flush = asyncio.create_task(self._commit(batch))
            self._flushes.add(batch.flush)
            batch.flush.add_done_callback(self._flushes.discard)

    async def _commit(self, batch: _Batch) -> None:
        # Queued behind the writers already waiting (the lock is FIFO), which join first.
        assert self._write_lock is not None
        async with self._write_lock:
            self._batch = None
            try:
                if batch.broken is not None:
                    await batch.tx.rollback()
                else:
                    await batch.tx.commit()
            except BaseException as exc:
                batch.broken = batch.broken or exc
            finally:
                try:
                    await batch.conn.close()
                except Exception as exc:
                    batch.broken = batch.broken or exc
            if batch.broken is not None:
                batch.committed.set_exception(batch.broken)
                # Retrieved here so that a batch nobody waits for any more logs nothing.
                batch.committed.exception()
            else:
                batch.committed.set_result(None)

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction (one consistent snapshot)."""
        async with self._reader.begin() as conn:
            yield conn

    @asynccontextmanager
    async def lookup(self) -> AsyncIterator[AsyncConnection]:
        """A connection for ONE short indexed read, such as a row by its primary key.

        On SQLite it runs on the event loop's thread in autocommit (one statement is its own
        snapshot): no round trip to a driver thread, which under load costs far more than
        the read. Use ``read()`` for anything that scans or needs several statements to agree.
        """
        async with self._lookup.connect() as conn:
            yield conn

    async def ping(self) -> None:
        """Raise unless the database answers."""
        async with self._reader.connect() as conn:
            await conn.execute(text("SELECT 1"))

    async def dispose(self) -> None:
        """Close every pooled connection (aiosqlite threads otherwise hang the exit)."""
        if self._flushes:
            await asyncio.wait(list(self._flushes))
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
            await self._lookup.dispose()
