"""``Bulk`` statements on both engines: rows written through the driver's executemany read
back exactly as SQLAlchemy's own executemany would have written them."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import bindparam, insert, select, update

from headless_ops.api.runtime import Runtime
from headless_ops.store.bulk import Bulk
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


async def test_rowcount_counts_only_rows_changed(runtime: Runtime) -> None:
    rename = Bulk(
        update(operation_events)
        .where(e.operation_id == bindparam("y_old"))
        .values(operation_id=bindparam("y_new")),
        [("y_old", None), ("y_new", None)],
    )
    at = datetime(2026, 1, 1, tzinfo=UTC)
    async with runtime.db.write() as conn:
        await _INSERT.execute(conn, [(1, at, "a", None, "running"), (1, at, "b", None, "running")])
        assert await rename.execute(conn, [("a", "a2"), ("missing", "m2"), ("b", "b2")]) == 2


async def test_parameters_must_match_the_statement(runtime: Runtime) -> None:
    wrong = Bulk(
        update(operation_events).where(e.operation_id == bindparam("z_id")).values(message=None),
        [("z_id", None), ("z_extra", None)],
    )
    async with runtime.db.write() as conn:
        with pytest.raises(ValueError, match="z_extra"):
            await wrong.execute(conn, [("a", 1)])
