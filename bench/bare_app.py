"""The baseline of ``bench.api_create``: a bare FastAPI endpoint that stores an operation.

It inserts the same row into the same ``operations`` table (the migrated schema) as
``POST /api/v1/inventory_device_headless_operation/`` does, on the same stack (FastAPI,
uvicorn, SQLAlchemy Core, aiosqlite) with the same SQLite settings — WAL, ``busy_timeout``,
``synchronous`` (FULL unless ``HEADLESS_OPS_SQLITE_SYNCHRONOUS`` says otherwise), one writer
connection, ``BEGIN IMMEDIATE`` and a commit before the 201 — but with no authentication,
no validation, no device lookup and no idempotency. It is the "how fast could this be"
line the real endpoint is compared with.

Run: ``BENCH_DATABASE=/path/headless-ops.db uvicorn bench.bare_app:app``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import event, insert
from sqlalchemy.ext.asyncio import create_async_engine

from headless_ops.ids import new_sortable_id
from headless_ops.store.operations import new_operation_row
from headless_ops.store.schema import operations

DATABASE = os.environ.get("BENCH_DATABASE", "bench.db")
SYNCHRONOUS = os.environ.get("HEADLESS_OPS_SQLITE_SYNCHRONOUS", "FULL").upper()

engine = create_async_engine(f"sqlite+aiosqlite:///{DATABASE}", pool_size=1, max_overflow=0)
write_lock = asyncio.Lock()


@event.listens_for(engine.sync_engine, "connect")
def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    cursor.close()


@event.listens_for(engine.sync_engine, "begin")
def _begin(conn: Any) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


def _iso(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@app.post("/operations/", status_code=201)
async def create(request: Request) -> JSONResponse:
    """Store the posted operation as is and answer 201 once it is committed."""
    body = await request.json()
    now = datetime.now(UTC)
    scheduled_at = datetime.fromisoformat(body["scheduled_at"])
    values = new_operation_row(
        op_id=new_sortable_id("op"),
        tenant_id="ten_bench",
        device_id=body["device_id"],
        operation_type=body["operation_type"],
        scheduled_at=scheduled_at,
        now=now,
        parameters=body["parameters"],
    )
    async with write_lock, engine.begin() as conn:
        await conn.execute(insert(operations).values(**values))
    return JSONResponse(
        {
            "id": values["id"],
            "device_id": values["device_id"],
            "operation_type": values["operation_type"],
            "status": "scheduled",
            "scheduled_at": _iso(scheduled_at),
            "created_at": _iso(now),
            "updated_at": _iso(now),
            "parameters": values["parameters"],
            "priority": body.get("priority", "normal"),
        },
        status_code=201,
    )


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    """Ready once it answers."""
    return {"status": "ok"}
