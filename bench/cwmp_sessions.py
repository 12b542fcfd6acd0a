"""Inform sessions per second of one ACS process, and its memory per connected CPE.

One session is what a periodic Inform costs the ACS: ``Inform`` → ``InformResponse``,
the CPE's empty POST → ``204``, on a fresh TCP connection. ``--cpes`` virtual CPEs (each
its own identity, pre-registered by a first Inform) run sessions back to back for
``--duration`` seconds from this process, through a lean raw-socket client so that the load
generator costs little CPU; the ACS (``headless-ops acs``, SQLite) runs in its own process.

Baseline, same run: a bare Starlette app under the same uvicorn, answering the same two
requests with a fixed InformResponse and 204 — no identity, no database. The ratio says
what identification, status recording and the session machinery cost.

Memory: the ACS's resident set before, and while every CPE holds a session open (Inform
answered, empty POST not yet sent), divided by the number of CPEs.

    python -m bench.cwmp_sessions [--cpes 1000] [--duration 10] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import HOST, bench_settings, free_port, print_machine, scratch_dir, server_env
from headless_ops.cwmp import soap
from headless_ops.store.migrate import upgrade

BARE_APP = """
from starlette.applications import Starlette
from starlette.responses import Response
from starlette.routing import Route
from headless_ops.cwmp import soap

REPLY = soap.serialize(soap.InformResponse(), cwmp_ns=soap.CWMP_1_0, id="1")
HEADERS = {"Content-Type": 'text/xml; charset="utf-8"', "Set-Cookie": "session=x; Path=/"}

async def acs(request):
    body = await request.body()
    if body.strip():
        return Response(REPLY, headers=HEADERS)
    return Response(b"", status_code=204, headers={"Connection": "close"})

app = Starlette(routes=[Route("/", acs, methods=["POST"])])
"""


def _inform(serial: str) -> bytes:
    inform = soap.Inform(
        device_id=soap.DeviceId("Bench", "00BEEF", "SIM", serial),
        events=[soap.EventStruct("2 PERIODIC")],
        current_time="2026-11-26T00:00:00Z",
        parameters=[
            soap.ParameterValue("Device.RootDataModelVersion", "2.17"),
            soap.ParameterValue("Device.DeviceInfo.HardwareVersion", "HW1"),
            soap.ParameterValue("Device.DeviceInfo.SoftwareVersion", "1.0.0"),
            soap.ParameterValue("Device.DeviceInfo.ProvisioningCode", ""),
            soap.ParameterValue("Device.DeviceInfo.UpTime", "3600", "xsd:unsignedInt"),
            soap.ParameterValue("Device.ManagementServer.ParameterKey", ""),
            soap.ParameterValue(
                "Device.ManagementServer.ConnectionRequestURL", f"http://127.0.0.1:9/{serial}"
            ),
        ],
    )
    body = soap.serialize(inform, cwmp_ns=soap.CWMP_1_0, id="1")
    head = (
        f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Type: text/xml\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


EMPTY = f"POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n\r\n".encode()


async def _response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    if length:
        await reader.readexactly(length)
    return status


async def _session(port: int, inform: bytes, *, hold: asyncio.Event | None = None) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(inform)
        status = await _response(reader)
        if status != 200:
            raise RuntimeError(f"Inform answered {status}")
        if hold is not None:
            await hold.wait()
        writer.write(EMPTY)
        status = await _response(reader)
        if status != 204:
            raise RuntimeError(f"empty POST answered {status}")
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _load(port: int, informs: list[bytes], duration: float) -> float:
    """Sessions/s with every virtual CPE informing back to back."""
    stop = time.monotonic() + duration
    count = 0
    errors = 0

    async def cpe(inform: bytes) -> None:
        nonlocal count, errors
        while time.monotonic() < stop:
            try:
                await _session(port, inform)
                count += 1
            except (OSError, RuntimeError, asyncio.IncompleteReadError):
                errors += 1
                await asyncio.sleep(0.01)

    started = time.monotonic()
    await asyncio.gather(*(cpe(i) for i in informs))
    elapsed = time.monotonic() - started
    if errors:
        print(f"    ({errors} failed sessions)")
    return count / elapsed


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise RuntimeError("server did not listen")


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)


async def _main(args: argparse.Namespace) -> None:
    print_machine()
    informs = [_inform(f"B{n:06d}") for n in range(args.cpes)]
    print(f"    cpes: {args.cpes} virtual CPEs, {args.duration:g} s per measurement\n")
    with scratch_dir("ho-bench-cwmp-") as scratch:
        (scratch / "bare_acs.py").write_text(BARE_APP)
        bare_port = free_port()
        bare = _start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "--app-dir",
                str(scratch),
                "bare_acs:app",
                "--host",
                HOST,
                "--port",
                str(bare_port),
                "--log-level",
                "warning",
                "--no-access-log",
            ],
            dict(os.environ),
            scratch / "bare.log",
        )
        settings = bench_settings(scratch / "data", cwmp_auto_register=True)
        upgrade(settings)
        acs_port = free_port()
        env = server_env(settings, free_port())
        env.update(
            HEADLESS_OPS_CWMP_PORT=str(acs_port),
            HEADLESS_OPS_CWMP_HOST=HOST,
            HEADLESS_OPS_LOG_LEVEL="WARNING",
            HEADLESS_OPS_CWMP_MAX_SESSIONS=str(args.cpes * 2),
            # The raw load generator answers no ACS request: nothing is provisioned (the
            # routine periodic session is what is measured).
            HEADLESS_OPS_CWMP_PROVISION_CONNECTION_REQUEST="false",
        )
        ours = _start([sys.executable, "-m", "headless_ops", "acs"], env, scratch / "acs.log")
        try:
            await _wait_port(bare_port, bare)
            await _wait_port(acs_port, ours)
            # First contact: every CPE registered (not measured).
            sem = asyncio.Semaphore(100)

            async def register(inform: bytes) -> None:
                async with sem:
                    await _session(acs_port, inform)

            started = time.monotonic()
            await asyncio.gather(*(register(i) for i in informs))
            print(f"registration of {args.cpes} CPEs: {time.monotonic() - started:.1f} s\n")
            # Memory per connected CPE: every CPE holding a session open at once (measured
            # before the load rounds, whose peak the allocator would keep).
            await asyncio.sleep(1)
            before = _rss_kib(ours.pid)
            hold = asyncio.Event()
            sessions = [asyncio.create_task(_session(acs_port, i, hold=hold)) for i in informs]
            await asyncio.sleep(max(3.0, args.cpes / 300))
            during = _rss_kib(ours.pid)
            hold.set()
            await asyncio.gather(*sessions, return_exceptions=True)
            per = (during - before) * 1024 / args.cpes
            print(
                f"ACS resident memory: {before / 1024:.1f} MiB idle, {during / 1024:.1f} MiB "
                f"with {args.cpes} sessions open: {per / 1024:.1f} KiB per connected CPE"
            )
            print()
            print(f"{'round':>5} {'bare sessions/s':>16} {'ACS sessions/s':>15} {'ratio':>7}")
            for n in range(args.rounds):
                base = await _load(bare_port, informs, args.duration)
                acs = await _load(acs_port, informs, args.duration)
                print(f"{n + 1:>5} {base:>16.0f} {acs:>15.0f} {acs / base:>6.2f}x", flush=True)
        finally:
            for proc in (bare, ours):
                proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=15)
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cpes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    asyncio.run(_main(parser.parse_args()))


if __name__ == "__main__":
    main()
