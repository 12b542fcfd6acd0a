"""Alembic environment: synchronous engine on the configured URL, SQLite in WAL mode."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator

from alembic import context
from sqlalchemy import create_engine, event, pool, text
from sqlalchemy.exc import DBAPIError

from headless_ops.store.schema import metadata

config = context.config
url = config.get_main_option("sqlalchemy.url")
assert url is not None
engine = create_engine(url, poolclass=pool.NullPool)

if url.startswith("sqlite"):

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()


#: PostgreSQL lock held while migrating: a second ``migrate`` (two replicas started at once)
#: waits for the first, then finds the work done instead of colliding with it.
_MIGRATION_LOCK = 0x68_6F_70_6D  # "hopm"
_POSTGRESQL = url.startswith("postgresql")


@contextlib.contextmanager
def _one_migrate_at_a_time() -> Iterator[None]:
    """Hold the migration lock on a connection of its own, idle in autocommit between tries.

    Not a blocking ``pg_advisory_lock``: a session waiting inside a statement holds a snapshot,
    and ``CREATE INDEX CONCURRENTLY`` in the first ``migrate`` waits for every such snapshot to
    end, while the waiter waits for the lock: a deadlock.
    """
    if not _POSTGRESQL:
        yield
        return
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as lock:
        # The lock lives as long as this session, idle for the whole migration: a server's
        # idle_session_timeout (PostgreSQL 14+) must not end it halfway.
        if lock.dialect.server_version_info and lock.dialect.server_version_info >= (14,):
            lock.exec_driver_sql("SET idle_session_timeout = 0")
        key = {"key": _MIGRATION_LOCK}
        notice_at = 0.0
        while not lock.execute(text("SELECT pg_try_advisory_lock(:key)"), key).scalar():
            if time.monotonic() >= notice_at:
                holder = lock.execute(
                    text(
                        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                        " AND objid = :key LIMIT 1"
                    ),
                    key,
                ).scalar()
                print(
                    f"waiting for another migrate (PostgreSQL backend {holder}) to finish",
                    file=sys.stderr,
                )
                notice_at = time.monotonic() + 10
            time.sleep(0.2)
        try:
            yield
        finally:
            # Closing the session releases the lock anyway: an unlock that fails (the
            # connection is gone) must not hide the migration's own outcome.
            with contextlib.suppress(DBAPIError):
                lock.execute(text("SELECT pg_advisory_unlock(:key)"), key)


with _one_migrate_at_a_time(), engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=url.startswith("sqlite"),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
