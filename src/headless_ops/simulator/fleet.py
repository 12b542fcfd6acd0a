"""Many simulated CPEs in one process, started with bounded concurrency."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import resource
from collections.abc import Callable
from typing import Any

from headless_ops.simulator.cpe import CpeConfig, CpeFaults, SimulatedCpe

__all__ = ["Fleet"]

# Descriptors a CPE may hold at once: its listener, a session connection, a file transfer,
# a connection request being answered; plus the ACS's side when it runs in this process.
_FDS_PER_CPE = 4
_FD_RESERVE = 256


class Fleet:
    """``count`` CPEs with serial numbers ``<serial_prefix>000001``…; ``config`` goes to
    every :class:`CpeConfig` (a ``faults`` object is copied, one per CPE). ``model`` is
    "tr098", "tr181", a CSV path, or "mixed" (odd serials TR-098, even ones TR-181)."""

    def __init__(
        self,
        acs_url: str,
        count: int,
        *,
        model: str = "tr098",
        serial_prefix: str = "SIM",
        start_concurrency: int = 50,
        **config: Any,
    ) -> None:
        self.start_concurrency = max(1, start_concurrency)
        faults: CpeFaults | None = config.pop("faults", None)
        #: The CPEs, in serial-number order.
        self.cpes: list[SimulatedCpe] = []
        for i in range(1, count + 1):
            per_cpe: dict[str, Any] = dict(config)
            if faults is not None:
                per_cpe["faults"] = dataclasses.replace(faults, fault_rpcs=dict(faults.fault_rpcs))
            # "mixed": TR-098 and TR-181 gateways in turn.
            own_model = ("tr098" if i % 2 else "tr181") if model == "mixed" else model
            cfg = CpeConfig(
                acs_url=acs_url, serial_number=f"{serial_prefix}{i:06d}", model=own_model, **per_cpe
            )
            self.cpes.append(SimulatedCpe(cfg))

    async def start(self, on_started: Callable[[SimulatedCpe], None] | None = None) -> None:
        """Start every CPE (listener + bootstrap session), ``start_concurrency`` at a time;
        ``on_started`` is called with each CPE once its first session ended.

        Raises the first error of a CPE that could not start (its listener could not bind),
        after closing the whole fleet. Session failures do not raise: see each CPE's
        ``last_session_error``.
        """
        _raise_fd_limit(len(self.cpes) * _FDS_PER_CPE + _FD_RESERVE)
        queue: asyncio.Queue[SimulatedCpe] = asyncio.Queue()
        for cpe in self.cpes:
            queue.put_nowait(cpe)

        async def worker() -> None:
            while True:
                try:
                    cpe = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await cpe.start()
                if on_started is not None:
                    on_started(cpe)

        # A few workers pulling from a queue, not one task per CPE.
        workers = [
            asyncio.create_task(worker())
            for _ in range(min(self.start_concurrency, len(self.cpes)))
        ]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await self.close()
            raise

    async def close(self) -> None:
        """Close every CPE."""
        await asyncio.gather(*(cpe.close() for cpe in self.cpes), return_exceptions=True)

    def summary(self) -> dict[str, int]:
        """Totals over the fleet: CPEs, sessions ok/failed, reboots, CPEs whose last session
        failed."""
        return {
            "cpes": len(self.cpes),
            "sessions": sum(c.sessions for c in self.cpes),
            "failed_sessions": sum(c.failed_sessions for c in self.cpes),
            "boots": sum(c.boots for c in self.cpes),
            "cpes_in_error": sum(1 for c in self.cpes if c.last_session_error is not None),
        }


def _raise_fd_limit(wanted: int) -> None:
    """Raise the soft open-files limit toward ``wanted`` (never above the hard limit): a
    default of 1,024 does not hold 1,000 listeners."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
