"""``headless-ops simulate``: run a simulated fleet against an ACS until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal

from headless_ops.cwmp.soap import device_key
from headless_ops.simulator.cpe import SimulatedCpe
from headless_ops.simulator.fleet import Fleet

__all__ = ["simulate"]


def simulate(
    acs_url: str,
    count: int,
    model: str = "tr181",
    periodic_s: float | None = None,
    acs_username: str | None = None,
    acs_password: str | None = None,
    cr_host: str = "127.0.0.1",
    serial_prefix: str = "SIM",
) -> None:
    """Start ``count`` CPEs informing ``acs_url``; print one line per CPE started, run until
    Ctrl-C/SIGTERM, close everything and print a summary."""
    asyncio.run(
        _simulate(
            acs_url, count, model, periodic_s, acs_username, acs_password, cr_host, serial_prefix
        )
    )


async def _simulate(
    acs_url: str,
    count: int,
    model: str,
    periodic_s: float | None,
    acs_username: str | None,
    acs_password: str | None,
    cr_host: str,
    serial_prefix: str,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(
        acs_url,
        count,
        model=model,
        serial_prefix=serial_prefix,
        periodic_inform_s=periodic_s,
        acs_username=acs_username,
        acs_password=acs_password,
        cr_host=cr_host,
    )

    def started(cpe: SimulatedCpe) -> None:
        error = cpe.last_session_error
        print(
            f"{cpe.config.serial_number} {device_key(cpe.device_id)} "
            f"cr={cpe.connection_request_url} version={cpe.software_version} "
            + ("ok" if error is None else f"error: {error}"),
            flush=True,
        )

    stopped = asyncio.create_task(stop.wait())
    try:
        starting = asyncio.create_task(fleet.start(started))
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done():
            starting.result()  # a listener that could not bind: the error is the output
            print(f"{count} simulated CPEs informing {acs_url}; Ctrl-C to stop", flush=True)
            await stopped
        else:
            starting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await starting
    finally:
        stopped.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stopped
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await fleet.close()
    totals = fleet.summary()
    print(
        f"stopped {totals['cpes']} CPEs: {totals['sessions']} sessions, "
        f"{totals['failed_sessions']} failed, {totals['boots']} reboots, "
        f"{totals['cpes_in_error']} CPEs with a failed last session",
        flush=True,
    )
