"""Alembic environment: synchronous engine on the configured URL, SQLite in WAL mode."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from alembic import context
from sqlalchemy import create_engine, event, pool

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
        try_lock = f"SELECT pg_try_advisory_lock({_MIGRATION_LOCK})"
        while not lock.exec_driver_sql(try_lock).scalar():
            time.sleep(0.2)
        try:
            yield
        finally:
            lock.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")


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
