"""``firmware_update`` across a simulated fleet: time from all due to all completed.

``headless-ops serve`` (API, scheduler and ACS in one process, SQLite) runs as a subprocess;
``--cpes`` simulated CPEs (``headless_ops.simulator``, TR-098, each with its own
connection-request listener) live in this process. A firmware image is uploaded, one
``firmware_update`` per CPE is created, all due at the same instant, and the run ends when
every operation has finished. Each operation is the whole path: claim, connection request,
CWMP session, Download, the CPE fetching the image from the ACS with per-download
credentials, a simulated reboot (``--reboot-s``), the Inform with ``TransferComplete``, the
version check, the recorded result.

The floor, same run: the time one CPE alone takes for the same update (its reboot and
sessions, nothing in parallel) — the fleet cannot finish sooner; the ratio says what
scheduling a thousand at once adds.

    python -m bench.cwmp_firmware [--cpes 1000] [--reboot-s 1]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sqlite3
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    HOST,
    HttpConnection,
    Server,
    free_port,
    insert_token_sqlite,
    migrated_sqlite,
    percentile,
    print_machine,
    scratch_dir,
    server_env,
)
from headless_ops.simulator import Fleet
from headless_ops.timeutil import iso

OPS = "/api/v1/inventory_device_headless_operation/"


async def _json(conn: HttpConnection, method: str, path: str, token: str, body: Any = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    raw = b""
    if body is not None:
        raw = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    status, data = await conn.request(method, path, headers=headers, body=raw)
    if status >= 400:
        raise RuntimeError(f"{method} {path}: {status} {data[:300]!r}")
    return json.loads(data) if data else None


async def _run(
    port: int, token: str, ids: list[str], delay_s: float
) -> tuple[float, int, dict[str, int]]:
    """Create one update per device, all due together; seconds from due to all finished."""
    due = datetime.now(UTC) + timedelta(seconds=delay_s)
    conns = [await HttpConnection.open(HOST, port) for _ in range(8)]
    try:
        before: dict[str, int] = {}
        for status in ("completed", "failed"):
            page = await _json(conns[0], "GET", f"{OPS}?status={status}&limit=1", token)
            before[status] = page["count"]
        queue = list(ids)

        async def creator(conn: HttpConnection) -> None:
            while queue:
                device_id = queue.pop()
                await _json(
                    conn,
                    "POST",
                    OPS,
                    token,
                    {
                        "device_id": device_id,
                        "operation_type": "firmware_update",
                        "scheduled_at": iso(due),
                        "parameters": {"firmware_version": "2.0.0"},
                    },
                )

        await asyncio.gather(*(creator(c) for c in conns))
        if datetime.now(UTC) >= due:
            raise RuntimeError("creating the operations took longer than --delay-s")
        await asyncio.sleep((due - datetime.now(UTC)).total_seconds())
        started = time.monotonic()
        conn = await HttpConnection.open(HOST, port)  # the others idled past keep-alive
        conns.append(conn)
        while True:
            counts: dict[str, int] = {}
            for status in ("completed", "failed"):
                page = await _json(conn, "GET", f"{OPS}?status={status}&limit=1", token)
                counts[status] = page["count"] - before[status]
            if sum(counts.values()) >= len(ids):
                return time.monotonic() - started, counts["completed"], counts
            if time.monotonic() - started > 1800:
                raise RuntimeError(f"not finished after 30 minutes: {counts}")
            await asyncio.sleep(0.2)
    finally:
        for c in conns:
            await c.close()


async def _main(args: argparse.Namespace) -> None:
    print_machine()
    with scratch_dir("ho-bench-fw-") as scratch:
        settings, db = migrated_sqlite(scratch, "data")
        token = insert_token_sqlite(db, settings)
        port, acs_port = free_port(), free_port()
        env = server_env(settings, port)
        env.update(
            HEADLESS_OPS_CWMP_PORT=str(acs_port),
            HEADLESS_OPS_CWMP_HOST=HOST,
            HEADLESS_OPS_CWMP_TENANT="bench",
            HEADLESS_OPS_LOG_LEVEL="WARNING",
        )
        server = Server("serve", [sys.executable, "-m", "headless_ops", "serve"], env, port)
        # Server.start() polls with its own event loop: run it off this one.
        await asyncio.to_thread(server.start)
        fleet: Fleet | None = None
        try:
            conn = await HttpConnection.open(HOST, port)
            image = b"VERSION=2.0.0\n" + b"\0" * 256 * 1024
            status, body = await conn.request(
                "POST",
                "/api/v1/firmware/?version=2.0.0&product_class=BM632w",
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/octet-stream",
                },
                body=image,
            )
            assert status == 201, body
            acs = f"http://{HOST}:{acs_port}/"
            # The floor: one CPE alone.
            solo = Fleet(
                acs,
                1,
                model="tr098",
                serial_prefix="SOLO",
                reboot_s=args.reboot_s,
                software_version="1.0.0",
            )
            await solo.start()
            page = await _json(conn, "GET", "/api/v1/inventory_device/?limit=10", token)
            solo_ids = [d["id"] for d in page["results"]]
            floor, _, _ = await _run(port, token, solo_ids, 1.0)
            await solo.close()
            fleet = Fleet(
                acs,
                args.cpes,
                model="tr098",
                serial_prefix="FW",
                reboot_s=args.reboot_s,
                software_version="1.0.0",
                start_concurrency=100,
                periodic_inform_s=args.periodic_s,
            )
            started = time.monotonic()
            await fleet.start()
            print(
                f"fleet: {args.cpes} CPEs started and registered in {time.monotonic() - started:.1f} s"
            )
            await conn.close()
            conn = await HttpConnection.open(HOST, port)  # the last one idled past keep-alive
            ids: list[str] = []
            offset = 0
            while True:
                page = await _json(
                    conn, "GET", f"/api/v1/inventory_device/?limit=1000&offset={offset}", token
                )
                ids += [d["id"] for d in page["results"] if d["id"] not in solo_ids]
                if not page["next"]:
                    break
                offset += 1000
            await conn.close()
            assert len(ids) == args.cpes, (len(ids), args.cpes)
            elapsed, completed, counts = await _run(port, token, ids, args.delay_s)
            print(f"\nfloor (one CPE alone):          {floor:6.2f} s")
            print(
                f"{args.cpes} CPEs, all due at once:    {elapsed:6.2f} s "
                f"({completed} completed, {counts['failed']} failed)"
            )
            print(f"operations/s:                   {completed / elapsed:6.1f}")
            print(f"ratio to the floor:             {elapsed / floor:6.2f}x")
            with contextlib.closing(sqlite3.connect(db)) as check:
                deferred = check.execute(
                    "SELECT COUNT(DISTINCT operation_id) FROM operation_events "
                    "WHERE event = 'deferred'"
                ).fetchone()[0]
                retried = check.execute(
                    "SELECT COUNT(DISTINCT operation_id) FROM operation_events "
                    "WHERE event = 'retry_scheduled'"
                ).fetchone()[0]
                timings = check.execute(
                    "SELECT scheduled_at, started_at, finished_at FROM operations "
                    "WHERE status = 'completed'"
                ).fetchall()
            print(
                f"deferred at least once (connection request not answered in time): {deferred}; "
                f"retried: {retried}"
            )

            def seconds(a: str, b: str) -> float:
                return (datetime.fromisoformat(b) - datetime.fromisoformat(a)).total_seconds()

            waits = sorted(seconds(r[0], r[1]) for r in timings)
            runs = sorted(seconds(r[1], r[2]) for r in timings)
            print(
                f"start lateness p50/p99/max: {percentile(waits, 50):.2f} / "
                f"{percentile(waits, 99):.2f} / {waits[-1]:.2f} s; "
                f"running time p50/p99/max: {percentile(runs, 50):.2f} / "
                f"{percentile(runs, 99):.2f} / {runs[-1]:.2f} s"
            )
        finally:
            if fleet is not None:
                await fleet.close()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpes", type=int, default=1000)
    parser.add_argument("--reboot-s", type=float, default=1.0)
    parser.add_argument("--delay-s", type=float, default=20.0, help="creation head start")
    parser.add_argument("--periodic-s", type=float, default=60.0, help="CPEs' periodic Inform")
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
