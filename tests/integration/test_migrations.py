"""Alembic migrations build exactly the schema of ``store/schema.py``, on both engines.

A database made by running every migration from empty is compared with the metadata by
Alembic's autogenerate comparison (types and server defaults included): no difference is
allowed. Downgrading to base removes every table, and upgrading again gives the same
schema; each revision also survives an up-down-up step on its own (the "stairway").
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Column, Connection, Engine, create_engine, event, inspect, pool
from sqlalchemy.schema import CreateIndex

from headless_ops.config import Settings
from headless_ops.store.migrate import alembic_config, sync_url, upgrade
from headless_ops.store.schema import metadata
from tests.conftest import drop_pg_database
from tests.support.postgres import PostgresCluster


@pytest.fixture
def empty_settings(
    engine_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings on an empty database of the current engine (nothing migrated yet)."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()  # alembic's own commands, unlike upgrade(), do not make it
    if engine_name == "sqlite":
        yield Settings(data_dir=data_dir)
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = f"ho_migrations_{tmp_path.name}"[:60]
    with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield Settings(data_dir=data_dir, database_url=cluster.url(name))
    finally:
        drop_pg_database(cluster, name)


def _differences(settings: Settings) -> list[Any]:
    engine = create_engine(sync_url(settings.effective_database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            with warnings.catch_warnings():
                # SQLAlchemy cannot reflect SQLite's expression indexes (it warns and skips
                # them): those are compared by their SQL below instead.
                warnings.filterwarnings(
                    "ignore", "Skipped unsupported reflection of expression-based index"
                )
                warnings.filterwarnings(
                    "ignore", "autogenerate skipping metadata-specified expression-based index"
                )
                found = list(compare_metadata(context, metadata))
            if conn.dialect.name == "sqlite":
                found += _sqlite_expression_indexes(conn)
            return found
    finally:
        engine.dispose()


def _sqlite_expression_indexes(conn: Connection) -> list[Any]:
    """The model's expression indexes missing from the SQLite database, or built otherwise
    (compared as the CREATE INDEX statements SQLAlchemy and SQLite spell)."""
    stored = dict(
        conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'index'").all()
    )
    out: list[Any] = []
    for table in metadata.tables.values():
        for index in table.indexes:
            if all(isinstance(e, Column) for e in index.expressions):
                continue  # a column index: compare_metadata compares it
            wanted = " ".join(str(CreateIndex(index).compile(dialect=conn.dialect)).split())
            have = " ".join((stored.get(index.name) or "").split())
            if wanted != have:
                out.append(("expression index", index.name, wanted, have))
    return out


def _state(settings: Settings) -> tuple[set[str], str | None]:
    """(tables, current revision)."""
    engine = create_engine(sync_url(settings.effective_database_url), poolclass=pool.NullPool)
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            revision = MigrationContext.configure(conn).get_current_revision()
        return tables, revision
    finally:
        engine.dispose()


def _script(settings: Settings) -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(settings))


def test_migrations_build_the_models_schema(empty_settings: Settings) -> None:
    upgrade(empty_settings)
    tables, revision = _state(empty_settings)
    assert revision == _script(empty_settings).get_current_head()  # one head, and it is applied
    assert tables == {*metadata.tables, "alembic_version"}
    assert _differences(empty_settings) == []


def test_downgrade_to_base_and_upgrade_again(empty_settings: Settings) -> None:
    cfg = alembic_config(empty_settings)
    upgrade(empty_settings)
    command.downgrade(cfg, "base")
    tables, revision = _state(empty_settings)
    assert (tables, revision) == ({"alembic_version"}, None)
    upgrade(empty_settings)
    assert _differences(empty_settings) == []


def test_each_revision_steps_up_down_up(empty_settings: Settings) -> None:
    cfg = alembic_config(empty_settings)
    script = _script(empty_settings)
    revisions = list(reversed(list(script.walk_revisions("base", "heads"))))
    assert revisions, "no migrations found"
    for rev in revisions:
        command.upgrade(cfg, rev.revision)
        command.downgrade(cfg, rev.down_revision or "base")  # type: ignore[arg-type]
        assert _state(empty_settings)[1] == rev.down_revision
        command.upgrade(cfg, rev.revision)
        assert _state(empty_settings)[1] == rev.revision
    assert _differences(empty_settings) == []


def test_index_revisions_build_online_on_postgresql(empty_settings: Settings) -> None:
    # Revisions that index a live table build the index CONCURRENTLY on PostgreSQL (writes go
    # on meanwhile), and a build that failed earlier (an invalid index left behind, the
    # revision unapplied) does not stop the next attempt.
    if empty_settings.is_sqlite:
        pytest.skip("SQLite builds an index in the migration's transaction (one writer anyway)")
    cfg = alembic_config(empty_settings)
    command.upgrade(cfg, "0005")
    url = sync_url(empty_settings.effective_database_url)
    engine = create_engine(url, poolclass=pool.NullPool)
    try:
        with engine.begin() as conn:
            if not conn.exec_driver_sql(
                "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
            ).scalar():
                pytest.skip("marking an index invalid takes a superuser (the test cluster's is)")
            # The leftover of an interrupted concurrent build.
            conn.exec_driver_sql(
                "CREATE INDEX ix_devices_cwmp_serial ON devices ((connection ->> 'serial_number'))"
            )
            conn.exec_driver_sql(
                "UPDATE pg_index SET indisvalid = false"
                " WHERE indexrelid = 'ix_devices_cwmp_serial'::regclass"
            )
        statements: list[str] = []

        def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            statements.append(" ".join(statement.split()))

        event.listen(Engine, "before_cursor_execute", seen)
        try:
            command.upgrade(cfg, "head")
            command.downgrade(cfg, "0004")
            command.upgrade(cfg, "head")
        finally:
            event.remove(Engine, "before_cursor_execute", seen)
        ddl = [s for s in statements if "INDEX" in s and "ix_" in s]
        for name in ("ix_operations_deferred", "ix_devices_cwmp_serial"):
            assert [s for s in ddl if name in s and s.startswith("CREATE INDEX CONCURRENTLY")]
            assert [s for s in ddl if s.startswith(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")]
        assert not [s for s in ddl if s.startswith("CREATE INDEX ix_")], ddl
        # Only the invalid leftover was dropped before a build, once.
        assert [s for s in ddl if s.startswith('DROP INDEX CONCURRENTLY IF EXISTS "')] == [
            'DROP INDEX CONCURRENTLY IF EXISTS "ix_devices_cwmp_serial"'
        ]
        with engine.connect() as conn:
            valid = conn.exec_driver_sql(
                "SELECT c.relname, i.indisvalid FROM pg_index i"
                " JOIN pg_class c ON c.oid = i.indexrelid"
                " WHERE c.relname IN ('ix_operations_deferred', 'ix_devices_cwmp_serial')"
            ).all()
        assert sorted(valid) == [("ix_devices_cwmp_serial", True), ("ix_operations_deferred", True)]
        # A valid index of the name (another migrate built it meanwhile) is kept, not rebuilt.
        command.downgrade(cfg, "0005")
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE INDEX ix_devices_cwmp_serial ON devices ((connection ->> 'serial_number'))"
            )
        statements.clear()
        event.listen(Engine, "before_cursor_execute", seen)
        try:
            command.upgrade(cfg, "head")
        finally:
            event.remove(Engine, "before_cursor_execute", seen)
        assert not [s for s in statements if s.startswith("DROP INDEX")], statements
    finally:
        engine.dispose()
    assert _differences(empty_settings) == []


def test_two_migrates_at_once_both_succeed(empty_settings: Settings) -> None:
    # Two replicas running `migrate` at the same moment on an empty PostgreSQL database: the
    # second waits for the first (whose concurrent index builds must not wait for it), then
    # finds nothing left to do. To make them meet, the test holds the version table locked
    # until both have reached the database, then lets go.
    if empty_settings.is_sqlite:
        pytest.skip("SQLite: one process migrates the file it serves")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADLESS_OPS_")}
    env["HEADLESS_OPS_DATABASE_URL"] = empty_settings.effective_database_url
    env["HEADLESS_OPS_DATA_DIR"] = str(empty_settings.data_dir)
    dsn = sync_url(empty_settings.effective_database_url).replace("+psycopg", "")
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute(
            "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL,"
            " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        gate.execute("BEGIN")
        gate.execute("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE")
        procs = [
            subprocess.Popen(
                [sys.executable, "-m", "headless_ops", "migrate"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            for _ in range(2)
        ]
        # Until both have reached the database: blocked on the version table (two, without
        # the migration lock), or one blocked and the other waiting for its lock (three
        # connections). Read from a connection of its own: pg_stat_activity is a snapshot
        # per transaction.
        try:
            with psycopg.connect(dsn, autocommit=True) as probe:
                deadline = time.monotonic() + 60
                while True:
                    row = probe.execute(
                        "SELECT count(*) FILTER (WHERE wait_event_type = 'Lock'), count(*)"
                        " FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid NOT IN (pg_backend_pid(), %s)",
                        (gate.info.backend_pid,),
                    ).fetchone()
                    if row is not None and (row[0] >= 2 or (row[0] >= 1 and row[1] >= 3)):
                        break
                    if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                        pytest.fail(f"the two migrate processes never met: {row}")
                    time.sleep(0.05)
            time.sleep(0.3)  # the second one settles into its wait too
            gate.execute("COMMIT")
            outputs = [p.communicate(timeout=120)[0].decode() for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
    assert [p.returncode for p in procs] == [0, 0], outputs
    assert _state(empty_settings)[1] == _script(empty_settings).get_current_head()
    assert _differences(empty_settings) == []
