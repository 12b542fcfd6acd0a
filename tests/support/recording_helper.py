"""A helper for worker subprocesses that records every attempt it runs, and how to read it back.

Loaded into ``headless-ops worker`` processes with
``HEADLESS_OPS_HELPERS=tests.support.recording_helper:RecordingHelper`` (the repository root on
``PYTHONPATH``). It is configured by environment variables, read when it is instantiated:

- ``RECORDING_DIR`` (required): each process appends to ``<RECORDING_DIR>/<pid>.log``;
- ``RECORDING_SLEEP_S``: seconds each attempt takes (default 0: it returns at once);
- ``RECORDING_BLOCK_UNTIL``: a path; each attempt blocks until that file exists;
- ``RECORDING_BLOCK_MAX_ATTEMPT``: with it, only attempts numbered up to this one block (so
  a rescued attempt — the next number — runs through, whichever process runs it).

Every attempt writes one ``start`` line before it does anything, and one ``end`` line when it
returns (``outcome`` "ok") or is interrupted (``outcome`` "cancelled"). Lines are JSON, written
with a single ``write(2)`` on an ``O_APPEND`` descriptor, so they reach the file the moment
they happen (a SIGKILL loses nothing already written) and lines of concurrent writers never
interleave. A killed process leaves a ``start`` without its ``end``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from headless_ops.domain.devices import DeviceStatus
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import DeviceView, OperationContext, StatusReport

__all__ = ["Attempt", "RecordingHelper", "read_attempts"]

_BLOCK_POLL_S = 0.02


class RecordingHelper:
    """Protocol ``ssh``; supports every operation type; records each attempt to its log."""

    protocol = "ssh"
    supported_operations: frozenset[OperationType] = frozenset(OperationType)

    def __init__(self) -> None:
        directory = Path(os.environ["RECORDING_DIR"])
        directory.mkdir(parents=True, exist_ok=True)
        self.pid = os.getpid()
        self.sleep_s = float(os.environ.get("RECORDING_SLEEP_S", "0") or 0)
        block = os.environ.get("RECORDING_BLOCK_UNTIL", "")
        self.block_until = Path(block) if block else None
        self.block_max_attempt = int(os.environ.get("RECORDING_BLOCK_MAX_ATTEMPT", "0") or 0)
        self._fd = os.open(
            directory / f"{self.pid}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644
        )

    def _write(self, record: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(record, separators=(",", ":")) + "\n").encode())

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        return StatusReport(DeviceStatus.ONLINE, firmware_version="1.0")

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        base = {
            "op": context.operation_id,
            "device": context.device.id,
            "attempt": context.attempt,
            "pid": self.pid,
        }
        start = time.time()
        self._write({"phase": "start", **base, "start": start})
        outcome = "cancelled"
        try:
            if self.sleep_s > 0:
                await asyncio.sleep(self.sleep_s)
            if self.block_until is not None and (
                not self.block_max_attempt or context.attempt <= self.block_max_attempt
            ):
                # Polling a file is the point: another process creates it.
                while not self.block_until.exists():  # noqa: ASYNC110
                    await asyncio.sleep(_BLOCK_POLL_S)
            outcome = "ok"
            return {"pid": self.pid, "attempt": context.attempt}
        finally:
            # Also on cancellation (drain, lost lease): the attempt ended here.
            self._write(
                {"phase": "end", **base, "start": start, "end": time.time(), "outcome": outcome}
            )


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded attempt; ``end`` is None when its process died before it ended."""

    op: str
    device: str
    attempt: int
    pid: int
    start: float
    end: float | None
    outcome: str | None


def read_attempts(directory: Path) -> list[Attempt]:
    """Every attempt recorded under ``directory`` by any process, ordered by start time.

    A start and its end are paired by (pid, operation, attempt number); an ``end`` without
    its ``start`` or a second ``start`` of the same key is a broken log and raises.
    """
    starts: dict[tuple[int, str, int], dict[str, Any]] = {}
    ends: dict[tuple[int, str, int], dict[str, Any]] = {}
    for path in sorted(directory.glob("*.log")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            key = (record["pid"], record["op"], record["attempt"])
            target = starts if record["phase"] == "start" else ends
            if key in target:
                raise AssertionError(f"{record['phase']} recorded twice for {key}")
            target[key] = record
    if set(ends) - set(starts):
        raise AssertionError(f"ends without a start: {sorted(set(ends) - set(starts))[:5]}")
    attempts = [
        Attempt(
            op=s["op"],
            device=s["device"],
            attempt=s["attempt"],
            pid=s["pid"],
            start=s["start"],
            end=ends[key]["end"] if key in ends else None,
            outcome=ends[key]["outcome"] if key in ends else None,
        )
        for key, s in starts.items()
    ]
    return sorted(attempts, key=lambda a: a.start)
