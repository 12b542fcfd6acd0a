"""``backup_configuration`` across many SSH devices: throughput, concurrency cap, reuse.

Simulated devices (src/headless_ops/simulator/ssh_device.py, shell kind) run in a separate process —
one asyncssh server per device, each serving its configuration file over SFTP — so the
devices' CPU is not the scheduler's. This process runs the real stack: SQLite store,
scheduler, ssh helper, backup store writing gzip files.

For each concurrency cap, and with connection reuse on (idle connections kept for the
next operation on the device) and off (a new connection per operation), it schedules
``--rounds`` backups of every device, all due at once, and times them to completion.
The baseline, measured in the same run: a plain asyncssh script (what people write today)
fetching the same files with the same concurrency, one new connection per backup,
writing nothing to a database. Ratios are printed against it and against no reuse.

    python -m bench.ssh_backup [--devices 200] [--rounds 3] [--caps 10,50,200]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import asyncssh

from bench.common import bench_settings, print_machine, scratch_dir
from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.helpers.ssh import SshHelper
from headless_ops.logs import configure_logging
from headless_ops.services.requests import parse_new_operation
from headless_ops.store.migrate import upgrade
from headless_ops.store.operations import OperationFilter

PASSWORD = "device-password"
CONFIG = "".join(f"option line_{i} 'value {i} of a realistic configuration'\n" for i in range(200))


# -- the devices' process ---------------------------------------------------------------


async def _serve(count: int, root: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # noqa: ASYNC240 - start-up
    from headless_ops.simulator.ssh_device import FakeDevice

    devices = []
    for i in range(count):
        dev = FakeDevice(root / f"d{i}", kind="shell", password=PASSWORD)
        (dev.root / "etc" / "device.conf").write_text(CONFIG)
        await dev.start()
        devices.append(dev)
    print(
        json.dumps(
            [{"port": d.port, "host_key": d.host_key_openssh, "root": str(d.root)} for d in devices]
        ),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for dev in devices:
        await dev.close()


# -- the measured side ------------------------------------------------------------------


async def _baseline(devices: list[dict[str, Any]], rounds: int, cap: int) -> float:
    """A plain asyncssh loop: new connection per backup, ``cap`` at a time; ops/s."""
    sem = asyncio.Semaphore(cap)

    async def one(dev: dict[str, Any]) -> None:
        async with (
            sem,
            asyncssh.connect(
                "127.0.0.1",
                dev["port"],
                username="admin",
                password=PASSWORD,
                known_hosts=([asyncssh.import_public_key(dev["host_key"])], [], []),
                config=None,
                agent_path=None,
                client_keys=None,
            ) as conn,
            conn.start_sftp_client() as sftp,
            sftp.open(f"{dev['root']}/etc/device.conf", "rb") as f,
        ):
            data = await f.read()
            assert len(data) == len(CONFIG)

    started = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*(one(d) for d in devices))
    return len(devices) * rounds / (time.perf_counter() - started)


async def _ours(
    data_dir: Path, devices: list[dict[str, Any]], rounds: int, cap: int, reuse: bool
) -> tuple[float, int]:
    """The real stack; ops/s and SSH connections opened."""
    settings = bench_settings(
        data_dir,
        ssh_max_connections=cap,
        ssh_idle_s=30.0 if reuse else 0.0,
        log_level="WARNING",
        claim_batch_size=512,
    )
    upgrade(settings)
    runtime = Runtime.from_settings(settings, registry=HelperRegistry())
    helper = SshHelper()
    runtime.add_helper(helper)
    try:
        tenant = await ensure_tenant(runtime.db, "bench")
        for i, dev in enumerate(devices):
            body = {
                "id": f"dev_{i}",
                "name": f"box-{i}",
                "protocol": "ssh",
                "connection": {
                    "host": "127.0.0.1",
                    "port": dev["port"],
                    "username": "admin",
                    "password": PASSWORD,
                    "host_key": dev["host_key"],
                    "host_key_policy": "require",
                    "profile": "linux",
                    "profile_vars": {"config_path": f"{dev['root']}/etc/device.conf"},
                },
            }
            await runtime.devices.create(tenant, runtime.devices.parse_new(body))
        location = (data_dir / "backups").as_uri() + "/"
        settings.backup_file_roots = [data_dir / "backups"]
        for _ in range(rounds):
            for i in range(len(devices)):
                request = parse_new_operation(
                    {
                        "device_id": f"dev_{i}",
                        "operation_type": "backup_configuration",
                        "parameters": {"backup_location": location, "compression": True},
                    },
                    by_name=False,
                )
                await runtime.operations.create(tenant, request)
        scheduler = runtime.make_scheduler()
        started = time.perf_counter()
        await scheduler.run_until_idle(timeout=900)
        elapsed = time.perf_counter() - started
        count, _ = await runtime.operations.list(
            tenant, OperationFilter(status="completed"), limit=1, offset=0
        )
        assert count == len(devices) * rounds, (count, len(devices) * rounds)
        return len(devices) * rounds / elapsed, helper._pool().opened
    finally:
        await runtime.close()


async def _main(args: argparse.Namespace) -> None:
    configure_logging("WARNING")
    print_machine()
    with scratch_dir("ho-bench-ssh-") as scratch:
        proc = subprocess.Popen(  # noqa: ASYNC220 - once, before anything is measured
            [
                sys.executable,
                "-m",
                "bench.ssh_backup",
                "--serve",
                str(args.devices),
                str(scratch / "devices"),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stdout is not None and proc.stdin is not None
            devices = json.loads(proc.stdout.readline())
            print(f"devices: {len(devices)} simulated SSH devices in process {proc.pid}")
            print(f"rounds : {args.rounds} backups of each device (one at a time per device)\n")
            print(
                f"{'cap':>5} {'baseline ops/s':>15} {'reuse ops/s':>12} {'conns':>6} "
                f"{'new-conn ops/s':>15} {'conns':>6} {'reuse/new':>10} {'ours/baseline':>14}"
            )
            for n, cap in enumerate(int(c) for c in args.caps.split(",")):
                base = await _baseline(devices, args.rounds, cap)
                reuse, reuse_conns = await _ours(scratch / f"r{n}", devices, args.rounds, cap, True)
                fresh, fresh_conns = await _ours(
                    scratch / f"f{n}", devices, args.rounds, cap, False
                )
                print(
                    f"{cap:>5} {base:>15.1f} {reuse:>12.1f} {reuse_conns:>6} {fresh:>15.1f} "
                    f"{fresh_conns:>6} {reuse / fresh:>9.2f}x {reuse / base:>13.2f}x",
                    flush=True,
                )
        finally:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--caps", default="10,50,200")
    parser.add_argument("--serve", nargs=2, metavar=("COUNT", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        os.makedirs(args.serve[1], exist_ok=True)
        asyncio.run(_serve(int(args.serve[0]), Path(args.serve[1])))
        return
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
