"""The claim's statements keep cheap plans whatever the planner's statistics say, on both
engines: the busy-device check probes the running operations' index once per candidate, and
the lease finds its rows by primary key alone.

Both were found with a million operations queued on PostgreSQL: with statistics taken while
nothing ran (autoanalyze waits for a tenth of the table to change), the busy check joined
every candidate against every running operation (340 ms per claim); without statistics, the
lease scanned the whole waiting index for each batch (50 ms). The tables here are smaller,
enough for the same plans to appear.
"""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, event, text
from sqlalchemy.ext.asyncio import AsyncConnection

from headless_ops.api.runtime import Runtime
from headless_ops.store.scheduling import _LEASE, _all_priorities_query, _candidates_query
from headless_ops.store.types import UtcDateTime
from headless_ops.timeutil import utcnow
from tests.support.sched import setup

_SEED_DEVICES = """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
INSERT INTO devices (tenant_id, id, name, protocol, connection, labels, status,
                     created_at, updated_at)
SELECT :tenant, 'dev_' || i, 'name-' || i, 'ssh', '{}', '{}', 'unknown', :now, :now FROM s
"""
_SEED_OPERATIONS = """
WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < :n)
INSERT INTO operations (id, tenant_id, device_id, operation_type, status, priority,
                        scheduled_at, run_after, parameters, attempts, max_attempts,
                        created_at, updated_at, lease_version, cancel_requested)
SELECT 'op_' || (100000000 + i), :tenant, 'dev_' || i, 'reboot', 'scheduled', 1,
       :due, :due, '{}', 0, 3, :now, :now, 0, false
FROM s
"""
_SET_RUNNING = """
UPDATE operations SET status = 'running', lease_owner = 'elsewhere', lease_expires_at = :later
WHERE id IN (SELECT id FROM operations ORDER BY id DESC LIMIT :n)
"""


async def _seed(conn: AsyncConnection, tenant: str, n: int) -> None:
    """``n`` devices with one operation each, due a second ago."""
    now = utcnow()
    params = {"tenant": tenant, "n": n, "now": now, "due": now - timedelta(seconds=1)}
    for sql in (_SEED_DEVICES, _SEED_OPERATIONS):
        times = [bindparam(k, type_=UtcDateTime()) for k in ("now", "due") if f":{k}" in sql]
        statement = text(sql).bindparams(*times)
        await conn.execute(statement, {k: v for k, v in params.items() if f":{k}" in sql})


async def _set_running(conn: AsyncConnection, n: int) -> None:
    statement = text(_SET_RUNNING).bindparams(bindparam("later", type_=UtcDateTime()))
    await conn.execute(statement, {"n": n, "later": utcnow() + timedelta(hours=1)})


async def _as_sent(
    conn: AsyncConnection, statement: Any, params: dict[str, Any]
) -> tuple[str, Any]:
    """The SQL and parameters the driver receives for ``statement``: run once in a savepoint
    that is rolled back, so the plan below is of the statement exactly as the store sends it."""
    sent: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, parameters: Any, *_args: Any) -> None:
        sent.append((sql, parameters))

    savepoint = await conn.begin_nested()
    event.listen(conn.sync_connection, "before_cursor_execute", capture)
    try:
        await conn.execute(statement, params)
    finally:
        event.remove(conn.sync_connection, "before_cursor_execute", capture)
    await savepoint.rollback()
    assert len(sent) == 1, sent
    return sent[0]


async def _pg_plan(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> list[Any]:
    """Every node of ``statement``'s executed plan (EXPLAIN ANALYZE, JSON)."""
    sql, parameters = await _as_sent(conn, statement, params)
    raw = (
        await conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters)
    ).scalar_one()
    root = (json.loads(raw) if isinstance(raw, str) else raw)[0]["Plan"]
    nodes, todo = [], [root]
    while todo:
        node = todo.pop()
        nodes.append(node)
        todo.extend(node.get("Plans", []))
    return nodes


async def _sqlite_plan(conn: AsyncConnection, statement: Any, params: dict[str, Any]) -> str:
    """``statement``'s EXPLAIN QUERY PLAN, one line per step."""
    sql, parameters = await _as_sent(conn, statement, params)
    rows = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", parameters)
    return "\n".join(str(r[-1]) for r in rows)


async def test_the_busy_check_probes_running_operations_per_candidate(runtime: Runtime) -> None:
    tenant = await setup(runtime)
    now = utcnow()
    async with runtime.db.write() as conn:
        await _seed(conn, tenant, 3000)
        # Statistics taken while nothing runs; then half the devices get a running operation.
        await conn.exec_driver_sql("ANALYZE")
        await _set_running(conn, 1500)
        params = {"c_now": now, "c_horizon": now, "c_limit": 641}
        if runtime.db.dialect == "postgresql":
            nodes = await _pg_plan(conn, _all_priorities_query(False, ()), params)
            probes = [n for n in nodes if n.get("Index Name") == "uq_operations_running_device"]
            assert probes, nodes
            for probe in probes:
                # A lookup by (tenant, device), not a scan of every running operation.
                assert "Index Cond" in probe and "device_id" in probe["Index Cond"], probe
                assert probe["Actual Rows"] <= 1, probe
            removed = sum(n.get("Rows Removed by Join Filter", 0) for n in nodes)
            assert removed == 0, nodes
            leased = [n for n in nodes if n["Node Type"] == "LockRows"]
            assert sum(n["Actual Rows"] for n in leased) == 641, nodes
        else:
            plan = await _sqlite_plan(conn, _candidates_query(False, 1, False, ()), params)
            assert "uq_operations_running_device" in plan, plan
            assert "SCAN operations_1" not in plan, plan


async def test_the_lease_finds_its_rows_by_primary_key(runtime: Runtime) -> None:
    tenant = await setup(runtime)
    now = utcnow()
    async with runtime.db.write() as conn:
        # No statistics yet, as right after a large batch was queued.
        await _seed(conn, tenant, 20_000)
        ids = [f"op_{100000000 + i}" for i in range(1, 513)]
        params = {
            "l_ids": ids,
            "l_owner": "w",
            "l_expires": now + timedelta(minutes=1),
            "l_now": now,
        }
        waiting_indexes = {"ix_operations_claim", "ix_operations_due", "ix_operations_expiry"}
        if runtime.db.dialect == "postgresql":
            nodes = await _pg_plan(conn, _LEASE[True], params)
            used = {n["Index Name"] for n in nodes if "Index Name" in n}
            assert not used & waiting_indexes, nodes
            updates = [n for n in nodes if n.get("Operation") == "Update"]
            assert [n["Actual Rows"] for n in updates] == [512], nodes
        else:
            plan = await _sqlite_plan(conn, _LEASE[False], params)
            assert not any(name in plan for name in waiting_indexes), plan
            assert "sqlite_autoindex_operations_1" in plan or "PRIMARY KEY" in plan, plan
