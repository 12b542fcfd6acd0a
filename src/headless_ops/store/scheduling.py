"""SQL of the scheduler: claim due operations under a lease, record outcomes with fencing,
renew leases, rescue expired ones, expire the unstarted, and say when to wake next.

Every transition is guarded by ``WHERE status IN (…)`` (and, for a running operation, by
its ``lease_version``), so two processes never both win one. Claims are serialised: on
SQLite by the write lock (``BEGIN IMMEDIATE``), on PostgreSQL by a transaction-scoped
advisory lock plus ``FOR UPDATE SKIP LOCKED`` on the candidate rows.
"""

from __future__ import annotations

import operator
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    all_,
    and_,
    any_,
    bindparam,
    case,
    func,
    insert,
    literal,
    literal_column,
    null,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.orm import aliased

from headless_ops.domain.lifecycle import Status
from headless_ops.domain.retry import Decision, RetryPolicy, decide_rescue
from headless_ops.domain.windows import MaintenanceWindow
from headless_ops.store.bulk import Bulk
from headless_ops.store.db import Database
from headless_ops.store.operations import to_record
from headless_ops.store.records import DeviceRecord
from headless_ops.store.schema import devices, maintenance_windows, operation_events, operations
from headless_ops.timeutil import ensure_utc

__all__ = [
    "WAKE_CHANNEL",
    "Claimed",
    "Limits",
    "Outcome",
    "SchedulerStore",
    "release_deferred",
    "window_from_row",
]

#: PostgreSQL NOTIFY channel that wakes every worker.
WAKE_CHANNEL = "headless_ops_wake"
_CLAIM_LOCK = 0x68_6F_70_73  # "hops": the advisory lock that serialises claims

_WAITING = [Status.SCHEDULED.value, Status.PENDING.value]
_RUNNING = Status.RUNNING.value
o = operations.c


def _status_literal(status: Status) -> Any:
    # Inline, not a bound parameter: SQLite only uses a partial index (WHERE status IN …)
    # when the query's own condition is visible when the statement is prepared, and
    # PostgreSQL's generic plans likewise. These are our constants, never client input.
    return literal_column(f"'{status.value}'")


#: The status conditions of the partial indexes, spelled so the planners can use them
#: (and without an expanding IN, which executemany() refuses).
_WAITING_LITERALS = [_status_literal(Status.SCHEDULED), _status_literal(Status.PENDING)]
_IS_WAITING = o.status.in_(_WAITING_LITERALS)
_IS_RUNNING = o.status == _status_literal(Status.RUNNING)
_IS_SCHEDULED = o.status == _status_literal(Status.SCHEDULED)
#: The same as _IS_WAITING for statements that find their rows by a list of ids: spelled so
#: that it cannot match the partial indexes, and the planner goes by the primary key alone.
#: Without statistics (a million operations just queued), PostgreSQL ANDed a scan of the whole
#: waiting index (4,000 pages, 50 ms) with the primary key's lookups for each lease.
_STILL_WAITING = func.coalesce(o.status, literal_column("''")).in_(_WAITING_LITERALS)


def status_is_waiting() -> Any:
    """``status IN ('scheduled', 'pending')``, as the partial indexes spell it."""
    return _IS_WAITING


def status_is_running() -> Any:
    """``status = 'running'``, as the partial indexes spell it."""
    return _IS_RUNNING


class LeasedOperation(NamedTuple):
    """What a worker needs of an operation it holds a lease on.

    This, :class:`Claimed` and :class:`Outcome` are named tuples, not frozen dataclasses:
    one of each is built per attempt, and a frozen dataclass's ``__init__`` (one
    ``object.__setattr__`` per field) was a tenth of the scheduler loop's CPU.
    """

    id: str
    tenant_id: str
    device_id: str
    operation_type: str
    parameters: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_version: int
    scheduled_at: datetime
    expires_at: datetime | None
    cancel_requested: bool
    priority: int = 0
    #: When the attempt starts: now, or the due time of one claimed ahead of it.
    started_at: datetime | None = None


_LEASED_COLUMNS = [getattr(operations.c, name) for name in LeasedOperation._fields]


class Claimed(NamedTuple):
    """An operation this worker now holds a lease on, with its device (None if deleted)."""

    op: LeasedOperation
    device: DeviceRecord | None


class Outcome(NamedTuple):
    """The end of one attempt, to be written if the lease still holds."""

    op_id: str
    lease_version: int
    attempt: int
    decision: Decision
    result: dict[str, Any] | None = None
    firmware_version: str | None = None


@dataclass
class Limits:
    """Global limits on running operations (0 / empty: none)."""

    max_running: int = 0
    per_type: dict[str, int] = field(default_factory=dict)
    per_label: dict[str, int] = field(default_factory=dict)
    starts_per_minute: int = 0

    @property
    def any(self) -> bool:
        """Whether any limit is set."""
        return bool(self.max_running or self.per_type or self.per_label or self.starts_per_minute)


def window_from_row(row: Any) -> MaintenanceWindow:
    """A domain window from a ``maintenance_windows`` row."""
    from headless_ops.services.requests import parse_timestamp

    ranges = tuple((parse_timestamp(a), parse_timestamp(b)) for a, b in row.ranges or [])
    return MaintenanceWindow(
        name=row.name,
        timezone=row.timezone,
        cron=row.cron,
        duration=timedelta(seconds=row.duration_s) if row.duration_s else None,
        ranges=ranges,
    )


def _event(op_id: str, at: datetime, event: str, attempt: int, **extra: Any) -> dict[str, Any]:
    return {
        "operation_id": op_id,
        "at": at,
        "event": event,
        "attempt": attempt,
        "error_code": extra.get("error_code"),
        "message": extra.get("message"),
        "worker": extra.get("worker"),
    }


_EVENT_FIELDS = ("operation_id", "at", "event", "attempt", "error_code", "message", "worker")
_event_row = operator.itemgetter(*_EVENT_FIELDS)
_INSERT_EVENTS = Bulk(
    insert(operation_events).values({f: bindparam(f"e_{f}") for f in _EVENT_FIELDS}),
    [(f"e_{f}", operation_events.c.at.type if f == "at" else None) for f in _EVENT_FIELDS],
    # In row order (ORDINALITY): the ids a history is read in follow the batch's order.
    pg_arrays="""
        INSERT INTO operation_events (operation_id, "at", event, attempt, error_code, message, worker)
        SELECT v.operation_id, v."at", v.event, v.attempt, v.error_code, v.message, v.worker
        FROM unnest(%(e_operation_id)b::text[], %(e_at)b::timestamptz[], %(e_event)b::text[],
                    %(e_attempt)b::int[], %(e_error_code)b::text[], %(e_message)b::text[],
                    %(e_worker)b::text[])
             WITH ORDINALITY
             AS v(operation_id, "at", event, attempt, error_code, message, worker, n)
        ORDER BY v.n
    """,
)


async def insert_events(conn: AsyncConnection, events: Sequence[dict[str, Any]]) -> None:
    """Append history rows."""
    if events:
        await _INSERT_EVENTS.execute(conn, list(map(_event_row, events)))


#: An attempt's outcome, fenced by its lease: written only while the operation is still
#: running under the lease version the attempt was started with.
_WRITE_OUTCOMES = Bulk(
    update(operations)
    .where(o.id == bindparam("b_id"), o.lease_version == bindparam("b_version"), _IS_RUNNING)
    .values(
        status=bindparam("b_status"),
        result=bindparam("b_result"),
        error=bindparam("b_error"),
        finished_at=bindparam("b_finished_at"),
        run_after=bindparam("b_run_after"),
        wait_reason=bindparam("b_wait_reason"),
        attempts=o.attempts - bindparam("b_refund"),
        lease_owner=null(),
        lease_expires_at=null(),
        updated_at=bindparam("b_updated_at"),
    ),
    [
        ("b_status", None),
        ("b_result", o.result.type),
        ("b_error", o.error.type),
        ("b_finished_at", o.finished_at.type),
        ("b_run_after", o.run_after.type),
        ("b_wait_reason", None),
        ("b_refund", None),
        ("b_updated_at", o.updated_at.type),
        ("b_id", None),
        ("b_version", None),
    ],
    pg_arrays="""
        UPDATE operations AS o
        SET status = v.status, result = v.result, error = v.error, finished_at = v.finished_at,
            run_after = v.run_after, wait_reason = v.wait_reason, attempts = o.attempts - v.refund,
            lease_owner = NULL, lease_expires_at = NULL, updated_at = v.updated_at
        FROM unnest(%(b_status)b::text[], %(b_result)b::jsonb[], %(b_error)b::jsonb[],
                    %(b_finished_at)b::timestamptz[], %(b_run_after)b::timestamptz[],
                    %(b_wait_reason)b::text[], %(b_refund)b::int[], %(b_updated_at)b::timestamptz[],
                    %(b_id)b::text[], %(b_version)b::int[])
             AS v(status, result, error, finished_at, run_after, wait_reason, refund, updated_at,
                  id, version)
        WHERE o.id = v.id AND o.lease_version = v.version AND o.status = 'running'
    """,
)


_running_too = aliased(operations)
#: 1 when another operation of the same device is running, else NULL: one probe of
#: ``uq_operations_running_device`` per candidate, whatever the planner believes. A scalar
#: subquery, not ``[NOT] EXISTS``: PostgreSQL turns EXISTS into a semi- or anti-join, and with
#: statistics taken while few operations ran (autoanalyze waits for a tenth of the table to
#: change) it joined every candidate against every running row: 340 ms for a claim of 641
#: candidates with 5,000 running and 1,000,000 queued.
_RUNNING_ON_DEVICE = (
    select(literal(1))
    .where(
        _running_too.c.tenant_id == o.tenant_id,
        _running_too.c.device_id == o.device_id,
        _running_too.c.status == _status_literal(Status.RUNNING),
    )
    .limit(1)
    .scalar_subquery()
)
_DEVICE_BUSY = _RUNNING_ON_DEVICE.is_not(None)
_DEVICE_FREE = _RUNNING_ON_DEVICE.is_(None)


class _Candidate(NamedTuple):
    """A due operation as choosing sees it (the columns of :func:`_candidates_query`)."""

    id: str
    tenant_id: str
    device_id: str
    operation_type: str
    maintenance_window: str | None
    expires_at: datetime | None
    attempts: int
    run_after: datetime
    d_maintenance_window: str | None
    d_labels: dict[str, str] | None
    d_updated_at: datetime | None
    priority: int


_CANDIDATE_QUERIES: dict[tuple[bool, int, bool], Any] = {}


def _candidates_query(pg: bool, priority: int, labels: bool, extra: tuple[Any, ...]) -> Any:
    """The candidates of one priority (parameters ``c_now``, ``c_horizon``, ``c_limit``).

    Built once per shape and kept (building and hashing it cost more than running it); the
    rare queries with ``extra`` conditions (limits reached) are built each time.
    """
    key = (pg, priority, labels)
    if not extra and key in _CANDIDATE_QUERIES:
        return _CANDIDATE_QUERIES[key]
    now: Any = bindparam("c_now")
    horizon: Any = bindparam("c_horizon")
    query = (
        # Only what choosing needs: the full rows are read once leased.
        select(
            o.id,
            o.tenant_id,
            o.device_id,
            o.operation_type,
            o.maintenance_window,
            o.expires_at,
            o.attempts,
            o.run_after,
            devices.c.maintenance_window.label("d_maintenance_window"),
            (devices.c.labels if labels else literal(None)).label("d_labels"),
            devices.c.updated_at.label("d_updated_at"),
            o.priority,
        )
        .select_from(
            operations.outerjoin(
                devices,
                and_(devices.c.tenant_id == o.tenant_id, devices.c.id == o.device_id),
            )
        )
        .where(
            _IS_WAITING,
            o.priority == priority,
            o.run_after <= horizon,
            # Past expires_at it must never start, even before housekeeping fails it (and
            # one claimed ahead starts at its run_after).
            o.expires_at.is_(None) | ((o.expires_at > now) & (o.expires_at > o.run_after)),
            _DEVICE_FREE,
            *extra,
        )
        .order_by(o.run_after)
        .limit(bindparam("c_limit"))
    )
    if pg:
        query = query.with_for_update(skip_locked=True, of=operations)
    if not extra:
        _CANDIDATE_QUERIES[key] = query
    return query


_PRIORITIES = (3, 2, 1, 0)
_ALL_PRIORITIES_QUERIES: dict[bool, Any] = {}


def _all_priorities_query(labels: bool, extra: tuple[Any, ...]) -> Any:
    """PostgreSQL: the candidates of every priority in one round trip (the claim lock is held
    across each one). Each priority's query stays as it is, rows locked ``SKIP LOCKED``, in a
    ``UNION ALL`` under one ``LIMIT``: PostgreSQL runs the branches in order and stops pulling
    rows at the limit, so a lower priority is read (and its rows locked) only while the higher
    ones have not filled the batch, as the one-query-per-priority loop did."""
    if not extra and labels in _ALL_PRIORITIES_QUERIES:
        return _ALL_PRIORITIES_QUERIES[labels]
    branches = [
        select(_candidates_query(True, p, labels, extra).subquery(f"p{p}")) for p in _PRIORITIES
    ]
    query = union_all(*branches).limit(bindparam("c_limit"))
    if not extra:
        _ALL_PRIORITIES_QUERIES[labels] = query
    return query


_LEASE_NOW = bindparam("l_now", type_=o.started_at.type)


def _ids_in(name: str, pg: bool) -> Any:
    """``id`` among the list parameter ``name``: on PostgreSQL one array parameter (``=
    ANY``), which it parses and plans once, instead of one parameter per id."""
    if pg:
        return o.id == any_(bindparam(name, type_=ARRAY(String)))
    return o.id.in_(bindparam(name, expanding=True))


def _lease_statement(pg: bool) -> Any:
    """Lease the chosen operations (those still waiting) for one worker."""
    return (
        update(operations)
        .where(_ids_in("l_ids", pg), _STILL_WAITING)
        .values(
            status=_RUNNING,
            attempts=o.attempts + 1,
            lease_owner=bindparam("l_owner"),
            lease_expires_at=bindparam("l_expires", type_=o.lease_expires_at.type),
            lease_version=o.lease_version + 1,
            # The latest attempt's start (its due time if claimed ahead of it); every attempt's
            # is in the history.
            started_at=case((o.run_after > _LEASE_NOW, o.run_after), else_=_LEASE_NOW),
            updated_at=_LEASE_NOW,
            wait_reason=null(),
        )
        .returning(*_LEASED_COLUMNS)
    )


def _lease_with_history() -> Any:
    """PostgreSQL: the lease and its "running" history lines in one statement (a
    data-modifying CTE). The claim holds the claim lock until it commits, and each round trip
    inside it waits for a turn of the worker's busy event loop: one fewer is time every
    other worker's claim gets back."""
    leased = _lease_statement(True).cte("leased")
    history = insert(operation_events).from_select(
        ["operation_id", "at", "event", "attempt", "worker"],
        select(
            leased.c.id,
            leased.c.started_at,
            literal(_RUNNING),
            leased.c.attempts,
            bindparam("l_owner"),
        ),
    )
    return select(*(leased.c[c.name] for c in _LEASED_COLUMNS)).add_cte(history.cte("history"))


_LEASE = {False: _lease_statement(False), True: _lease_with_history()}
_DEVICE_COLUMNS = [getattr(devices.c, f.name) for f in fields(DeviceRecord)]
#: The devices of some operations, through the join: each device is then found by its whole
#: primary key, a plan PostgreSQL picks even before it has statistics (with ``tenant_id = ?
#: AND id IN (…)`` it scanned a whole tenant's devices through the (tenant, name) index).
_DEVICES_OF_OPERATIONS = (
    select(*_DEVICE_COLUMNS)
    .select_from(
        operations.join(
            devices, and_(devices.c.tenant_id == o.tenant_id, devices.c.id == o.device_id)
        )
    )
    .where(o.id.in_(bindparam("d_ops", expanding=True)))
)
#: The fence of a batch of outcomes: each one's current status and lease version (locked on
#: PostgreSQL until the outcomes are written).
_LEASE_STATE = {
    False: select(o.id, o.lease_version, o.status).where(_ids_in("r_ids", False)),
    True: select(o.id, o.lease_version, o.status).where(_ids_in("r_ids", True)).with_for_update(),
}


class SchedulerStore:
    """The scheduler's transactions, for one worker identity."""

    def __init__(self, db: Database, worker_id: str) -> None:
        self.db = db
        self.worker_id = worker_id
        self.pg = db.dialect == "postgresql"
        # Devices change rarely and are read for every claim: keep them, keyed by
        # (tenant, id), and trust an entry while its updated_at matches the row's.
        self._devices_seen: dict[tuple[str, str], DeviceRecord] = {}

    async def _serialise_claims(self, conn: AsyncConnection) -> None:
        if self.pg:
            await conn.execute(select(func.pg_advisory_xact_lock(_CLAIM_LOCK)))

    async def _notify(self, conn: AsyncConnection) -> None:
        if self.pg:
            # Signed: this worker's own listener skips it (it woke itself in-process).
            await conn.execute(select(func.pg_notify(WAKE_CHANNEL, self.worker_id)))

    # -- claim ---------------------------------------------------------------------------

    async def claim(
        self,
        now: datetime,
        limit: int,
        *,
        lease_ttl: timedelta,
        limits: Limits,
        window_margin: timedelta,
        ahead: timedelta = timedelta(0),
    ) -> tuple[list[Claimed], bool]:
        """Lease up to ``limit`` due operations, highest priority first, then earliest.

        With ``ahead``, operations due by ``now + ahead`` are leased too, with their due time
        as ``started_at``: the caller starts them then.

        Skips devices with a running operation (and takes at most one per device), defers
        operations outside their maintenance window to its next opening (``pending``), and
        holds back what a limit forbids (``pending``). Returns the claimed operations and
        whether a rate limit held something back.
        """
        async with self.db.write() as conn:
            await self._serialise_claims(conn)
            want = limit + limit // 4 + 1
            horizon = now + ahead
            rows = await self._candidates(conn, now, horizon, want, labels=limits.any)
            if not rows:
                return [], False
            windows = await self._windows(conn, rows)
            counter = await _LimitCounter.load(conn, limits, now) if limits.any else None
            chosen: list[Any] = []
            seen_devices: set[tuple[str, str]] = set()
            deferred: list[dict[str, Any]] = []
            held: list[str] = []
            failed: list[tuple[str, int, str, str]] = []
            rate_limited = False
            next_opening: dict[tuple[str, datetime], datetime | None] = {}

            def consider(row: Any) -> None:
                nonlocal rate_limited
                key = (row.tenant_id, row.device_id)
                if key in seen_devices:
                    return
                name = row.maintenance_window or row.d_maintenance_window
                if name:
                    window = windows.get((row.tenant_id, name))
                    if window is None:
                        failed.append(
                            (
                                row.id,
                                row.attempts,
                                "window_missing",
                                f"maintenance window {name!r} does not exist",
                            )
                        )
                        return
                    # The window must be open when it starts (now, or later if claimed ahead).
                    start = max(now, row.run_after)
                    opens = next_opening.get((window.name, start))
                    if opens is None:
                        # Once per window and start per pass: many operations share both.
                        opens = next_opening[(window.name, start)] = window.next_start(
                            start, window_margin
                        )
                    if opens != start:
                        nxt = opens
                        if nxt is None or (row.expires_at is not None and nxt >= row.expires_at):
                            failed.append(
                                (
                                    row.id,
                                    row.attempts,
                                    "expired",
                                    f"maintenance window {name!r} does not open before expires_at"
                                    if nxt is not None
                                    else f"maintenance window {name!r} never opens",
                                )
                            )
                        else:
                            deferred.append(
                                {"b_id": row.id, "b_run_after": nxt, "b_attempts": row.attempts}
                            )
                        return
                if counter is not None:
                    verdict = counter.admit(row.operation_type, row.d_labels or {})
                    if verdict is not None:
                        rate_limited = rate_limited or verdict == "rate"
                        held.append(row.id)
                        return
                seen_devices.add(key)
                chosen.append(row)

            for row in rows:
                if len(chosen) >= limit:
                    break
                consider(row)
            if counter is not None and held and len(chosen) < limit and len(rows) >= want:
                # Operations a per-type or per-label limit holds back filled the page: look
                # past them, or a long queue of one limited type would block every other.
                blocked = counter.saturated()
                if blocked is not None:
                    more = await self._candidates(
                        conn,
                        now,
                        horizon,
                        want,
                        labels=True,
                        exclude=blocked,
                        skip=[r.id for r in rows],
                    )
                    windows.update(await self._windows(conn, more))
                    for row in more:
                        if len(chosen) >= limit:
                            break
                        consider(row)
            leased = await self._lease(conn, now, chosen, lease_ttl)
            await self._defer(conn, now, deferred)
            await self._hold(conn, now, held, "limit")
            await self._fail_waiting(conn, now, failed)
        if not leased:
            return [], rate_limited
        # Read after the claim committed: the claim lock (PostgreSQL) is not held for it.
        async with self.db.read() as conn:
            device_rows = await self._devices(conn, [row for row, _ in leased])
        claimed = [Claimed(op, device_rows.get((r.tenant_id, r.device_id))) for r, op in leased]
        return claimed, rate_limited

    async def _candidates(
        self,
        conn: AsyncConnection,
        now: datetime,
        horizon: datetime,
        want: int,
        *,
        labels: bool,
        exclude: tuple[list[str], dict[str, list[str]]] | None = None,
        skip: list[str] | None = None,
    ) -> list[Any]:
        """Operations due by ``horizon`` in claim order; without the types and label values
        of ``exclude`` (limits already reached) and the ids in ``skip``."""
        extra: list[Any] = []
        if exclude is not None:
            types, label_values = exclude
            if types:
                extra.append(o.operation_type.not_in(types))
            for key, values in label_values.items():
                value = devices.c.labels[key].as_string()
                extra.append(value.is_(None) | value.not_in(values))
        if skip:
            # One array parameter on PostgreSQL: the list appears in each priority's branch.
            extra.append(
                o.id != all_(literal(skip, ARRAY(String))) if self.pg else o.id.not_in(skip)
            )
        params: dict[str, Any] = {"c_now": now, "c_horizon": horizon}
        rows: list[Any] = []
        if self.pg:
            params["c_limit"] = want
            found = await conn.execute(_all_priorities_query(labels, tuple(extra)), params)
            rows.extend(map(_Candidate._make, found.all()))
            # In claim order whatever order the branches came back in (priority, then due).
            rows.sort(key=lambda r: (-r.priority, r.run_after))
            return rows
        for priority in _PRIORITIES:
            if len(rows) >= want:
                break
            query = _candidates_query(self.pg, priority, labels, tuple(extra))
            params["c_limit"] = want - len(rows)
            # As plain named tuples: a Row's attribute access is a Python-level lookup, and
            # choosing reads a dozen attributes of every candidate.
            rows.extend(map(_Candidate._make, (await conn.execute(query, params)).all()))
        return rows

    async def _windows(
        self, conn: AsyncConnection, rows: Iterable[Any]
    ) -> dict[tuple[str, str], MaintenanceWindow]:
        keys = {
            (r.tenant_id, r.maintenance_window or r.d_maintenance_window)
            for r in rows
            if r.maintenance_window or r.d_maintenance_window
        }
        if not keys:
            return {}
        mw = maintenance_windows.c
        found = (
            await conn.execute(
                select(maintenance_windows).where(tuple_(mw.tenant_id, mw.name).in_(sorted(keys)))
            )
        ).all()
        return {(w.tenant_id, w.name): window_from_row(w) for w in found}

    async def _lease(
        self, conn: AsyncConnection, now: datetime, chosen: list[_Candidate], lease_ttl: timedelta
    ) -> list[tuple[_Candidate, LeasedOperation]]:
        """Lease what is still waiting of ``chosen``: (candidate, lease) pairs, in order."""
        if not chosen:
            return []
        result = await conn.execute(
            _LEASE[self.pg],
            {
                "l_ids": [r.id for r in chosen],
                "l_owner": self.worker_id,
                "l_expires": now + lease_ttl,
                "l_now": now,
            },
        )
        leased = {op.id: op for op in map(LeasedOperation._make, result.all())}
        if not self.pg:  # PostgreSQL's statement wrote these itself
            await insert_events(
                conn,
                [
                    _event(
                        op.id, op.started_at or now, _RUNNING, op.attempts, worker=self.worker_id
                    )
                    for op in leased.values()
                ],
            )
        return [(r, leased[r.id]) for r in chosen if r.id in leased]

    async def _devices(
        self, conn: AsyncConnection, rows: list[_Candidate]
    ) -> dict[tuple[str, str], DeviceRecord]:
        out: dict[tuple[str, str], DeviceRecord] = {}
        missing: list[str] = []  # operation ids whose device is to be read
        for r in rows:
            key = (r.tenant_id, r.device_id)
            known = self._devices_seen.get(key)
            if known is not None and known.updated_at == r.d_updated_at:
                out[key] = known
            elif r.d_updated_at is not None:
                missing.append(r.id)
        if not missing:
            return out
        if len(self._devices_seen) > 200_000:
            self._devices_seen.clear()
        found = await conn.execute(_DEVICES_OF_OPERATIONS, {"d_ops": missing})
        for d in found.all():
            record = DeviceRecord(*d)
            key = (record.tenant_id, record.id)
            out[key] = self._devices_seen[key] = record
        return out

    async def _defer(
        self, conn: AsyncConnection, now: datetime, deferred: list[dict[str, Any]]
    ) -> None:
        """Outside the window: pending until the window's next opening."""
        if not deferred:
            return
        await conn.execute(
            update(operations)
            .where(o.id == bindparam("b_id"), _IS_WAITING)
            .values(
                status=Status.PENDING.value,
                run_after=bindparam("b_run_after"),
                wait_reason="maintenance_window",
                updated_at=now,
            ),
            deferred,
        )
        await insert_events(
            conn,
            [
                _event(
                    d["b_id"],
                    now,
                    Status.PENDING.value,
                    d["b_attempts"],
                    message=f"waiting for its maintenance window, opening {d['b_run_after'].isoformat()}",
                )
                for d in deferred
            ],
        )

    async def _hold(
        self, conn: AsyncConnection, now: datetime, ids: list[str], reason: str
    ) -> None:
        """Due but held back: ``pending`` with the reason (history only on the first time)."""
        if not ids:
            return
        changed = await conn.execute(
            update(operations)
            .where(
                o.id.in_(ids),
                _STILL_WAITING,
                (o.wait_reason.is_(None)) | (o.wait_reason != reason),
            )
            .values(status=Status.PENDING.value, wait_reason=reason, updated_at=now)
            .returning(o.id, o.attempts)
        )
        await insert_events(
            conn,
            [
                _event(r.id, now, Status.PENDING.value, r.attempts, message=f"waiting: {reason}")
                for r in changed.all()
            ],
        )

    async def _fail_waiting(
        self, conn: AsyncConnection, now: datetime, failed: list[tuple[str, int, str, str]]
    ) -> None:
        if not failed:
            return
        # Only those still waiting (one may have been cancelled meanwhile): no false history.
        still = {
            r.id
            for r in (
                await conn.execute(
                    select(o.id).where(o.id.in_([f[0] for f in failed]), _STILL_WAITING)
                )
            ).all()
        }
        failed = [f for f in failed if f[0] in still]
        if not failed:
            return
        await conn.execute(
            update(operations)
            .where(o.id == bindparam("b_id"), _IS_WAITING)
            .values(
                status=Status.FAILED.value,
                error=bindparam("b_error"),
                finished_at=now,
                updated_at=now,
                wait_reason=None,
            ),
            [{"b_id": i, "b_error": {"code": c, "message": m}} for i, _, c, m in failed],
        )
        await insert_events(
            conn,
            [
                _event(i, now, Status.FAILED.value, a, error_code=c, message=m)
                for i, a, c, m in failed
            ],
        )
        await self._notify(conn)

    # -- housekeeping ----------------------------------------------------------------------

    async def mark_busy_pending(self, now: datetime) -> int:
        """Due ``scheduled`` operations whose device is busy become ``pending`` (device_busy)."""
        async with self.db.write() as conn:
            changed = await conn.execute(
                update(operations)
                # _IS_WAITING too: the partial index is found by its exact condition.
                .where(_IS_WAITING, _IS_SCHEDULED, o.run_after <= now, _DEVICE_BUSY)
                .values(status=Status.PENDING.value, wait_reason="device_busy", updated_at=now)
                .returning(o.id, o.attempts)
            )
            rows = changed.all()
            await insert_events(
                conn,
                [
                    _event(
                        r.id,
                        now,
                        Status.PENDING.value,
                        r.attempts,
                        message="waiting: another operation is running on the device",
                    )
                    for r in rows
                ],
            )
        return len(rows)

    async def expire_waiting(self, now: datetime) -> list[str]:
        """Fail, as ``expired``, every waiting operation whose ``expires_at`` has passed."""
        async with self.db.write() as conn:
            rows = (
                await conn.execute(
                    select(o.id, o.attempts)
                    .where(_IS_WAITING, o.expires_at.is_not(None), o.expires_at <= now)
                    .limit(1000)
                )
            ).all()
            await self._fail_waiting(
                conn,
                now,
                [(r.id, r.attempts, "expired", "not started before expires_at") for r in rows],
            )
        return [r.id for r in rows]

    async def reap(
        self, now: datetime, policy: RetryPolicy, rng: random.Random | None = None
    ) -> list[tuple[str, Decision]]:
        """Rescue running operations whose lease expired: retry, fail, or cancel them."""
        async with self.db.write() as conn:
            query = select(operations).where(_IS_RUNNING, o.lease_expires_at < now).limit(500)
            if self.pg:
                query = query.with_for_update(skip_locked=True)
            rows = [to_record(r) for r in (await conn.execute(query)).all()]
            done: list[tuple[str, Decision]] = []
            events = []
            for op in rows:
                decision = decide_rescue(
                    status=Status(op.status),
                    lease_expires_at=op.lease_expires_at,
                    attempts=op.attempts,
                    max_attempts=op.max_attempts,
                    cancel_requested=op.cancel_requested,
                    now=now,
                    policy=policy,
                    expires_at=op.expires_at,
                    rng=rng,
                )
                if decision is None:
                    continue
                outcome = Outcome(op.id, op.lease_version, op.attempts, decision)
                if await self._write_outcome(conn, now, outcome):
                    done.append((op.id, decision))
                    events.append(
                        _event(
                            op.id,
                            now,
                            "lease_expired",
                            op.attempts,
                            error_code="lease_expired",
                            message=f"lease of {op.lease_owner} expired",
                            worker=self.worker_id,
                        )
                    )
                    events.append(self._outcome_event(now, outcome))
            await insert_events(conn, events)
            if done:
                await self._notify(conn)
        return done

    # -- results -----------------------------------------------------------------------------

    @staticmethod
    def _outcome_values(now: datetime, outcome: Outcome) -> dict[str, Any]:
        d = outcome.decision
        terminal = d.status in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)
        error = None if d.error_code is None else {"code": d.error_code, "message": d.message or ""}
        return {
            "status": d.status.value,
            "result": outcome.result,
            "error": error,
            "finished_at": now if terminal else None,
            "run_after": d.run_after or now,
            "wait_reason": d.wait_reason or ("backoff" if d.status is Status.SCHEDULED else None),
            "refund": 1 if d.refund_attempt else 0,
        }

    def _outcome_event(self, now: datetime, outcome: Outcome) -> dict[str, Any]:
        d = outcome.decision
        event = "retry_scheduled" if d.status is Status.SCHEDULED else d.status.value
        if d.refund_attempt:
            event = "deferred"
        message = d.message
        if d.status is Status.SCHEDULED and d.run_after is not None:
            message = f"{d.message or ''}; next attempt at {d.run_after.isoformat()}".lstrip("; ")
        return _event(
            outcome.op_id,
            now,
            event,
            outcome.attempt,
            error_code=d.error_code,
            message=message,
            worker=self.worker_id,
        )

    async def _write_outcome(self, conn: AsyncConnection, now: datetime, outcome: Outcome) -> bool:
        values = self._outcome_values(now, outcome)
        refund = values.pop("refund")
        result = await conn.execute(
            update(operations)
            .where(
                o.id == outcome.op_id,
                o.lease_version == outcome.lease_version,
                _IS_RUNNING,
            )
            .values(
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
                attempts=o.attempts - refund,
                **values,
            )
        )
        return bool(result.rowcount)

    async def record(self, now: datetime, outcomes: Sequence[Outcome]) -> set[str]:
        """Write outcomes whose lease still holds, in one transaction; returns the ids refused
        (their lease was lost: another attempt owns the operation now)."""
        if not outcomes:
            return set()
        async with self.db.write() as conn:
            found = await conn.execute(
                _LEASE_STATE[self.pg], {"r_ids": [x.op_id for x in outcomes]}
            )
            current = {op_id: (version, status) for op_id, version, status in found.all()}
            valid, refused = [], set()
            for x in outcomes:
                state = current.get(x.op_id)
                if state is None or state[1] != _RUNNING or state[0] != x.lease_version:
                    refused.add(x.op_id)
                else:
                    valid.append(x)
            if valid:
                rows = []
                for x in valid:
                    v = self._outcome_values(now, x)
                    rows.append(
                        (
                            v["status"],
                            v["result"],
                            v["error"],
                            v["finished_at"],
                            v["run_after"],
                            v["wait_reason"],
                            v["refund"],
                            now,
                            x.op_id,
                            x.lease_version,
                        )
                    )
                await _WRITE_OUTCOMES.execute(conn, rows)
                await self._learn_firmware(conn, now, valid)
            events = [self._outcome_event(now, x) for x in valid]
            events += [
                _event(
                    x.op_id,
                    now,
                    "result_refused",
                    x.attempt,
                    error_code="lease_lost",
                    message="a late result was refused: the lease had been lost",
                    worker=self.worker_id,
                )
                for x in outcomes
                if x.op_id in refused
            ]
            await insert_events(conn, events)
            await self._notify(conn)
        return refused

    async def _learn_firmware(
        self, conn: AsyncConnection, now: datetime, outcomes: list[Outcome]
    ) -> None:
        learned = [x for x in outcomes if x.firmware_version]
        if not learned:
            return
        await conn.execute(
            update(devices)
            .where(
                devices.c.id
                == select(o.device_id).where(o.id == bindparam("b_id")).scalar_subquery(),
                devices.c.tenant_id
                == select(o.tenant_id).where(o.id == bindparam("b_id")).scalar_subquery(),
            )
            .values(
                firmware_version=bindparam("b_fw"),
                last_seen_at=now,
                status="online",
                updated_at=now,
            ),
            [{"b_id": x.op_id, "b_fw": x.firmware_version} for x in learned],
        )

    # -- leases ------------------------------------------------------------------------------

    async def heartbeat(
        self, now: datetime, held: dict[str, int], lease_ttl: timedelta
    ) -> tuple[set[str], set[str]]:
        """Renew this worker's leases; returns (lost ids, ids whose cancellation was asked)."""
        if not held:
            return set(), set()
        lost: set[str] = set()
        cancel: set[str] = set()
        async with self.db.write() as conn:
            await conn.execute(
                update(operations)
                .where(o.lease_owner == self.worker_id, _IS_RUNNING, o.id.in_(list(held)))
                .values(lease_expires_at=now + lease_ttl)
            )
            rows = (
                await conn.execute(
                    select(
                        o.id, o.status, o.lease_version, o.lease_owner, o.cancel_requested
                    ).where(o.id.in_(list(held)))
                )
            ).all()
        by_id = {r.id: r for r in rows}
        for op_id, version in held.items():
            r = by_id.get(op_id)
            if (
                r is None
                or r.status != _RUNNING
                or r.lease_version != version
                or r.lease_owner != self.worker_id
            ):
                lost.add(op_id)
            elif r.cancel_requested:
                cancel.add(op_id)
        return lost, cancel

    async def release(self, now: datetime, held: dict[str, int]) -> int:
        """Give leases back on shutdown: the operations are due again at once, and the
        interrupted attempt does not count."""
        if not held:
            return 0
        async with self.db.write() as conn:
            # Only leases still ours are released (and get a history line with their attempt).
            current = (
                await conn.execute(
                    select(o.id, o.attempts, o.lease_version, o.status).where(o.id.in_(list(held)))
                )
            ).all()
            ours = {
                r.id: r.attempts
                for r in current
                if r.status == _RUNNING and r.lease_version == held[r.id]
            }
            result = await conn.execute(
                update(operations)
                .where(
                    o.id == bindparam("b_id"),
                    o.lease_version == bindparam("b_version"),
                    _IS_RUNNING,
                )
                .values(
                    status=Status.SCHEDULED.value,
                    attempts=o.attempts - 1,
                    # Due again at once; one claimed ahead of its time keeps that time.
                    run_after=case(
                        (o.run_after > literal(now, o.run_after.type), o.run_after),
                        else_=literal(now, o.run_after.type),
                    ),
                    lease_owner=None,
                    lease_expires_at=None,
                    updated_at=now,
                ),
                [{"b_id": i, "b_version": v} for i, v in held.items()],
            )
            await insert_events(
                conn,
                [
                    _event(
                        i,
                        now,
                        "released",
                        attempt,
                        message="worker shutting down; lease released, attempt not counted",
                        worker=self.worker_id,
                    )
                    for i, attempt in ours.items()
                ],
            )
            await self._notify(conn)
        return int(result.rowcount or 0)

    # -- timing ------------------------------------------------------------------------------

    async def next_wake(self, now: datetime, ahead: timedelta = timedelta(0)) -> datetime | None:
        """The earliest future moment there is something to do: ``ahead`` before a
        ``run_after`` (operations are claimed that early), a lease expiry or an
        ``expires_at``."""
        async with self.db.read() as conn:
            due = (
                await conn.execute(
                    select(func.min(o.run_after)).where(_IS_WAITING, o.run_after > now + ahead)
                )
            ).scalar()
            if due is not None:
                due = ensure_utc(due) - ahead
            lease = (
                await conn.execute(select(func.min(o.lease_expires_at)).where(_IS_RUNNING))
            ).scalar()
            expiry = (
                await conn.execute(
                    select(func.min(o.expires_at)).where(_IS_WAITING, o.expires_at.is_not(None))
                )
            ).scalar()
        found = [t for t in (due, lease, expiry) if t is not None]
        if not found:
            return None
        return min(ensure_utc(t) for t in found)

    async def queue_stats(self, now: datetime) -> tuple[int, float]:
        """(due and waiting, age in seconds of the oldest due one)."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(func.count(), func.min(o.run_after)).where(
                        _IS_WAITING, o.run_after <= now
                    )
                )
            ).one()
        oldest = (now - ensure_utc(row[1])).total_seconds() if row[1] is not None else 0.0
        return int(row[0]), oldest


class _LimitCounter:
    """Running counts against the configured limits, updated as candidates are admitted."""

    def __init__(
        self,
        limits: Limits,
        total: int,
        by_type: dict[str, int],
        by_label: dict[tuple[str, str], int],
        starts: int,
    ) -> None:
        self.limits = limits
        self.total = total
        self.by_type = by_type
        self.by_label = by_label
        self.starts = starts

    @classmethod
    async def load(cls, conn: AsyncConnection, limits: Limits, now: datetime) -> _LimitCounter:
        rows = (
            await conn.execute(
                select(o.operation_type, devices.c.labels)
                .select_from(
                    operations.outerjoin(
                        devices,
                        and_(devices.c.tenant_id == o.tenant_id, devices.c.id == o.device_id),
                    )
                )
                .where(_IS_RUNNING)
            )
        ).all()
        by_type: dict[str, int] = {}
        by_label: dict[tuple[str, str], int] = {}
        for r in rows:
            by_type[r.operation_type] = by_type.get(r.operation_type, 0) + 1
            for key in limits.per_label:
                value = (r.labels or {}).get(key)
                if value is not None:
                    by_label[(key, value)] = by_label.get((key, value), 0) + 1
        starts = 0
        if limits.starts_per_minute:
            starts = int(
                (
                    await conn.execute(
                        select(func.count()).where(o.started_at > now - timedelta(minutes=1))
                    )
                ).scalar_one()
            )
        return cls(limits, len(rows), by_type, by_label, starts)

    def saturated(self) -> tuple[list[str], dict[str, list[str]]] | None:
        """Operation types and label values at their limit; None when nothing more can
        start at all (the total or the rate limit is reached)."""
        lim = self.limits
        if lim.starts_per_minute and self.starts >= lim.starts_per_minute:
            return None
        if lim.max_running and self.total >= lim.max_running:
            return None
        types = [t for t, cap in lim.per_type.items() if cap and self.by_type.get(t, 0) >= cap]
        label_values: dict[str, list[str]] = {}
        for (key, value), count in self.by_label.items():
            cap = lim.per_label.get(key)
            if cap and count >= cap:
                label_values.setdefault(key, []).append(value)
        return types, label_values

    def admit(self, operation_type: str, labels: dict[str, str]) -> str | None:
        """None if it may start (and count it); else which limit holds it ("rate" or "limit")."""
        lim = self.limits
        if lim.starts_per_minute and self.starts >= lim.starts_per_minute:
            return "rate"
        if lim.max_running and self.total >= lim.max_running:
            return "limit"
        # A limit of 0 is no limit (config.py), in the maps as in the scalars.
        cap = lim.per_type.get(operation_type)
        if cap and self.by_type.get(operation_type, 0) >= cap:
            return "limit"
        for key, cap in lim.per_label.items():
            value = labels.get(key)
            if cap and value is not None and self.by_label.get((key, value), 0) >= cap:
                return "limit"
        self.total += 1
        self.starts += 1
        self.by_type[operation_type] = self.by_type.get(operation_type, 0) + 1
        for key in lim.per_label:
            value = labels.get(key)
            if value is not None:
                self.by_label[(key, value)] = self.by_label.get((key, value), 0) + 1
        return None


async def release_deferred(
    conn: AsyncConnection, tenant_id: str, device_id: str, now: datetime, reason: str
) -> int:
    """Make a device's operations deferred for ``reason`` (its helper could not reach it) due
    now: the device has shown up. Returns how many."""
    result = await conn.execute(
        update(operations)
        .where(
            _IS_WAITING,
            o.tenant_id == tenant_id,
            o.device_id == device_id,
            o.status == _status_literal(Status.PENDING),
            o.wait_reason == reason,
        )
        .values(run_after=now, updated_at=now)
    )
    return int(result.rowcount or 0)
