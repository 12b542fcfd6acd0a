"""Crash durability: every operation that got a 201 survives a SIGKILL of the server.

Several concurrent clients POST operations to ``headless-ops serve`` (a subprocess); after a
few hundred 201s the server is killed with SIGKILL mid-load, restarted on the same data
(same data dir, same database), and every acknowledged operation must be there, intact.
On SQLite the database file must also pass ``PRAGMA integrity_check``. Both engines.
"""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.support.server import GRACEFUL_EXIT, ServerProcess, engine_database, start_server

OPS = "/api/v1/inventory_device_headless_operation/"
CLIENTS = 8
KILL_AFTER = 300  # acknowledged creates before the crash


async def _load(server: ServerProcess) -> tuple[dict[str, str], int, list[str]]:
    """Run the clients until the server dies; returns (acked id -> firmware_version sent,
    requests in flight when it was killed, unexpected answers)."""
    acked: dict[str, str] = {}
    in_flight: set[int] = set()
    at_kill = -1
    unexpected: list[str] = []
    headers = {"Authorization": f"Bearer {server.admin_token}"}

    async def client(n: int) -> None:
        nonlocal at_kill
        async with httpx2.AsyncClient(
            base_url=server.base_url, headers=headers, timeout=30
        ) as http:
            for seq in range(100_000):
                version = f"9.{n}.{seq}"  # unique per request: lets the restart check contents
                body = {
                    "device_id": "dev_crash",
                    "operation_type": "firmware_update",
                    # Far in the future: the embedded scheduler leaves them alone, so the
                    # load is the creates alone.
                    "scheduled_at": "2099-01-01T00:00:00Z",
                    "parameters": {"firmware_version": version},
                }
                in_flight.add(n)
                try:
                    r = await http.post(OPS, json=body)
                except httpx2.TransportError:
                    return  # the server is gone
                finally:
                    in_flight.discard(n)
                if r.status_code != 201:
                    unexpected.append(f"{r.status_code} {r.text[:200]}")
                    return
                acked[r.json()["id"]] = version
                if len(acked) >= KILL_AFTER and server.proc.poll() is None:
                    # SIGKILL while the other clients wait for answers: those requests may
                    # or may not have been stored, but every 201 already sent must be.
                    at_kill = len(in_flight)
                    server.proc.kill()

    await asyncio.wait_for(asyncio.gather(*(client(n) for n in range(CLIENTS))), timeout=120)
    return acked, at_kill, unexpected


def _all_operations(server: ServerProcess) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    with server.client() as http:
        offset = 0
        while True:
            r = http.get(OPS, params={"device_id": "dev_crash", "limit": 1000, "offset": offset})
            assert r.status_code == 200, r.text
            page = r.json()["results"]
            found.update({op["id"]: op for op in page})
            if len(page) < 1000:
                return found
            offset += 1000


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
async def test_sigkill_loses_no_acknowledged_operation(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    data_dir = tmp_path / "data"
    with engine_database(engine, request) as database_url:
        server = start_server(data_dir, database_url=database_url, log_name="first")
        try:
            assert server.admin_token
            with server.client() as http:
                r = http.post(
                    "/api/v1/inventory_device/",
                    json={"id": "dev_crash", "name": "crash", "protocol": "cwmp"},
                )
                assert r.status_code == 201, r.text
            acked, at_kill, unexpected = await _load(server)
        finally:
            server.kill()
        assert server.proc.returncode == -signal.SIGKILL  # really killed, not shut down
        assert unexpected == []
        assert len(acked) >= KILL_AFTER
        assert at_kill >= 1  # the crash did land mid-load

        # Restart on the same data: the bootstrap token still works (no new one is shown).
        again = start_server(data_dir, database_url=database_url, log_name="restart")
        try:
            assert again.admin_token is None
            again.admin_token = server.admin_token
            stored = _all_operations(again)
            lost = sorted(set(acked) - set(stored))
            assert lost == [], f"{len(lost)} of {len(acked)} acknowledged operations lost"
            for op_id, version in acked.items():
                assert stored[op_id]["parameters"]["firmware_version"] == version
                assert stored[op_id]["status"] == "scheduled"
            # Only requests in flight at the crash may have been stored without a 201.
            assert len(stored) - len(acked) <= at_kill
            # And the restarted server takes new work.
            with again.client() as http:
                r = http.post(OPS, json={"device_id": "dev_crash", "operation_type": "reboot"})
                assert r.status_code == 201, r.text
        finally:
            assert again.stop() in GRACEFUL_EXIT

    if engine == "sqlite":
        db_file = data_dir / "headless-ops.db"
        conn = sqlite3.connect(db_file)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
            placeholders = ",".join("?" * len(acked))
            (count,) = conn.execute(
                f"SELECT count(*) FROM operations WHERE id IN ({placeholders})", list(acked)
            ).fetchone()
            assert count == len(acked)
        finally:
            conn.close()
