"""``Bulk`` statements on both engines: rows written through the driver's executemany read
back exactly as SQLAlchemy's own executemany would have written them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import bindparam, event, insert, select, update

from headless_ops.api.runtime import Runtime
from headless_ops.store.bulk import Bulk
from headless_ops.store.scheduling import _event, insert_events
from headless_ops.store.schema import operation_events

e = operation_events.c
_INSERT = Bulk(
    insert(operation_events).values(
        operation_id=bindparam("x_id"),
        at=bindparam("x_at"),
        event=bindparam("x_event"),
        attempt=bindparam("x_attempt"),
        message=bindparam("x_message"),
    ),
    # Not in the statement's order: the driver's order is taken from the compiled statement.
    [
        ("x_attempt", None),
        ("x_at", e.at.type),
        ("x_id", None),
        ("x_message", None),
        ("x_event", None),
    ],
)


async def test_rows_read_back_as_sqlalchemy_writes_them(runtime: Runtime) -> None:
    at = datetime(2026, 11, 26, 7, 35, 27, 123456, tzinfo=UTC)
    later = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
    rows = [
        (1, at, "op_a", None, "running"),
        (2, at, "op_a", "it's 100% done", "completed"),
        (1, later, "op_b", "x", "running"),
    ]
    async with runtime.db.write() as conn:
        assert await _INSERT.execute(conn, rows) == 3
        assert await _INSERT.execute(conn, []) == 0
        # The same rows through SQLAlchemy, for comparison.
        await conn.execute(
            insert(operation_events),
            [
                {
                    "operation_id": f"ref_{i}",
                    "at": r[1],
                    "event": r[4],
                    "attempt": r[0],
                    "message": r[3],
                }
                for i, r in enumerate(rows)
            ],
        )
    async with runtime.db.read() as conn:
        found = (
            await conn.execute(
                select(e.operation_id, e.at, e.event, e.attempt, e.message).order_by(e.id)
            )
        ).all()
    ours, theirs = found[:3], found[3:]
    assert [tuple(r)[1:] for r in ours] == [tuple(r)[1:] for r in theirs]
    assert [tuple(r) for r in ours] == [
        ("op_a", at, "running", 1, None),
        ("op_a", at, "completed", 2, "it's 100% done"),
        ("op_b", later, "running", 1, "x"),
    ]


_RENAME_ARRAYS = """
    UPDATE operation_events SET operation_id = v.new
    FROM unnest(%(y_old)b::text[], %(y_new)b::text[]) AS v(old, new)
    WHERE operation_events.operation_id = v.old
"""


@pytest.mark.parametrize("array_form", [False, True], ids=["executemany", "array-form"])
async def test_rowcount_counts_only_rows_changed(runtime: Runtime, array_form: bool) -> None:
    # The array form (PostgreSQL only: SQLite always takes executemany) counts the same way.
    if array_form and runtime.db.dialect != "postgresql":
        pytest.skip("SQLite has no array form")
    rename = Bulk(
        update(operation_events)
        .where(e.operation_id == bindparam("y_old"))
        .values(operation_id=bindparam("y_new")),
        [("y_old", None), ("y_new", None)],
        pg_arrays=_RENAME_ARRAYS if array_form else None,
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with runtime.db.write() as conn:
        await _INSERT.execute(conn, [(1, at, "a", None, "running"), (1, at, "b", None, "running")])
        assert await rename.execute(conn, [("a", "a2"), ("missing", "m2"), ("b", "b2")]) == 2
    async with runtime.db.read() as conn:
        names = (await conn.execute(select(e.operation_id).order_by(e.id))).scalars().all()
    assert names == ["a2", "b2"]


async def test_parameters_must_match_the_statement(runtime: Runtime) -> None:
    wrong = Bulk(
        update(operation_events).where(e.operation_id == bindparam("z_id")).values(message=None),
        [("z_id", None), ("z_extra", None)],
    )
    async with runtime.db.write() as conn:
        with pytest.raises(ValueError, match="z_extra"):
            await wrong.execute(conn, [("a", 1)])


async def test_history_rows_in_batch_order_on_both_paths(runtime: Runtime) -> None:
    # The scheduler's history insert: one statement over arrays on PostgreSQL, executemany on
    # SQLite. Same rows, ids in the batch's order (a history is read in id order), NULLs kept.
    at = datetime(2026, 11, 26, 7, 35, 27, 123456, tzinfo=UTC)
    batch = [
        _event(f"op_{i % 3}", at, "running" if i % 2 else "failed", i, worker="w" if i else None)
        for i in range(300)
    ]
    batch[7]["error_code"], batch[7]["message"] = "io_error", "reset by peer; 'quoted' \\ {x}"
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)

    event.listen(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    try:
        async with runtime.db.write() as conn:
            await insert_events(conn, batch)
    finally:
        event.remove(runtime.db.engine.sync_engine, "before_cursor_execute", seen)
    # One statement over arrays on PostgreSQL; the driver's executemany on SQLite.
    inserts = [s for s in statements if "INSERT" in s]
    assert len(inserts) == 1
    assert ("unnest" in inserts[0]) == (runtime.db.dialect == "postgresql")
    async with runtime.db.read() as conn:
        found = (
            await conn.execute(
                select(e.operation_id, e.at, e.event, e.attempt, e.error_code, e.message, e.worker)
                .where(e.operation_id.like("op_%"))
                .order_by(e.id)
            )
        ).all()
    assert [tuple(r) for r in found] == [
        (
            b["operation_id"],
            b["at"],
            b["event"],
            b["attempt"],
            b["error_code"],
            b["message"],
            b["worker"],
        )
        for b in batch
    ]


def test_array_form_must_take_every_column() -> None:
    with pytest.raises(ValueError, match="array form parameters"):
        Bulk(
            update(operation_events)
            .where(e.operation_id == bindparam("z_id"))
            .values(message=None),
            [("z_id", None), ("z_message", None)],
            pg_arrays="UPDATE operation_events SET message = NULL WHERE operation_id = %(z_id)b",
        )
