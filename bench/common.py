"""Shared benchmark plumbing: servers as subprocesses, a lean HTTP client, load, statistics.

Load only ever goes to 127.0.0.1, to servers this process started, and every loop is bounded
in count and time.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

from headless_ops.config import Settings
from headless_ops.crypto import load_keys
from headless_ops.store.migrate import upgrade

__all__ = [
    "HOST",
    "REPO",
    "HttpConnection",
    "LoadResult",
    "Server",
    "bench_settings",
    "device_rows",
    "free_port",
    "headless_ops_server",
    "insert_devices_sqlite",
    "insert_token_sqlite",
    "load_average",
    "machine_summary",
    "migrated_sqlite",
    "percentile",
    "print_machine",
    "run_closed_loop",
    "run_wrk",
    "scratch_dir",
    "server_env",
    "sortable_id",
    "sqlite_datetime",
]

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


# --------------------------------------------------------------------------- environment


def free_port() -> int:
    """An unused loopback TCP port."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def machine_summary() -> dict[str, str]:
    """What the numbers were measured on (goes into docs/benchmarks.md)."""
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 1024 / 1024:.0f} GiB"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": f"{cpu}, {os.cpu_count()} cores",
        "memory": mem,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
    }


def load_average() -> str:
    """The 1-minute load average: how busy the machine was besides the benchmark."""
    with contextlib.suppress(OSError, IndexError):
        return Path("/proc/loadavg").read_text().split()[0]
    return "unknown"


def print_machine() -> None:
    """Print :func:`machine_summary` as the header of a benchmark's output."""
    for key, value in machine_summary().items():
        print(f"{key:>8}: {value}")
    print(f"{'load':>8}: {load_average()} (1-minute load average at the start)")


def bench_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a benchmark server's data dir (fixed keys, so every process agrees)."""
    keys_file = data_dir / "bench-keys.json"
    if keys_file.exists():
        keys = json.loads(keys_file.read_text())
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        keys = {"secret_keys": Fernet.generate_key().decode(), "token_hash_key": "bench-hash-key"}
        keys_file.write_text(json.dumps(keys))
    return Settings(data_dir=data_dir, **keys, **overrides)


def server_env(settings: Settings, port: int) -> dict[str, str]:
    """The environment that makes ``headless-ops serve`` use ``settings`` on ``port``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADLESS_OPS_")}
    env.update(
        HEADLESS_OPS_DATA_DIR=str(settings.data_dir),
        HEADLESS_OPS_HOST=HOST,
        HEADLESS_OPS_PORT=str(port),
        HEADLESS_OPS_CWMP_PORT="0",
        HEADLESS_OPS_SECRET_KEYS=settings.secret_keys,
        HEADLESS_OPS_TOKEN_HASH_KEY=settings.token_hash_key,
        HEADLESS_OPS_SQLITE_SYNCHRONOUS=settings.sqlite_synchronous,
        HEADLESS_OPS_LOG_LEVEL="WARNING",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")])),
    )
    if settings.database_url:
        env["HEADLESS_OPS_DATABASE_URL"] = settings.database_url
    return env


# --------------------------------------------------------------------------- data


def sortable_id(prefix: str, millis: int, rand: int) -> str:
    """An id shaped like ``headless_ops.ids.new_sortable_id`` at a chosen time."""
    value = (millis << 80) | (rand & ((1 << 80) - 1))
    out = []
    for _ in range(26):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(out))}"


def sqlite_datetime(value: datetime) -> str:
    """How SQLAlchemy's DateTime stores a UTC time in SQLite (text that sorts as time)."""
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def insert_token_sqlite(db_path: Path, settings: Settings, tenant_name: str = "bench") -> str:
    """A tenant and an admin token for it, written directly; returns the bearer value."""
    _, hasher = load_keys(settings)
    now = sqlite_datetime(datetime.now(UTC))
    tenant_id = "ten_bench"
    token_id = "tok_bench0000000000"
    secret = "bench-secret-" + "x" * 32
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.execute(
            "INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)",
            (tenant_id, tenant_name, now),
        )
        conn.execute(
            "INSERT INTO api_tokens (id, tenant_id, name, secret_hash, scopes, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (token_id, tenant_id, "bench", hasher.hash(secret), "admin", now),
        )
    return f"{token_id}.{secret}"


def device_rows(tenant_id: str, count: int) -> list[tuple[Any, ...]]:
    """``count`` SSH devices ``dev_b00000`` … as rows of the devices table."""
    now = sqlite_datetime(datetime.now(UTC))
    rows = []
    for i in range(count):
        # Loopback and the discard port: nothing here is ever due, and were a helper to try
        # anyway, it would reach nothing off this machine.
        connection = {"host": "127.0.0.1", "port": 9, "username": "ops"}
        rows.append(
            (
                tenant_id,
                f"dev_b{i:05d}",
                f"bench-device-{i:05d}",
                "ssh",
                json.dumps(connection),
                None,
                json.dumps({"site": f"site-{i % 10}"}),
                None,
                "unknown",
                None,
                None,
                None,
                now,
                now,
            )
        )
    return rows


DEVICE_INSERT = (
    "INSERT INTO devices (tenant_id, id, name, protocol, connection, secrets, labels, "
    "maintenance_window, status, status_detail, last_seen_at, firmware_version, created_at, "
    "updated_at) VALUES ({})".format(", ".join(["{p}"] * 14))
)


def insert_devices_sqlite(db_path: Path, tenant_id: str, count: int) -> list[str]:
    """``count`` devices of ``tenant_id``; returns their ids."""
    rows = device_rows(tenant_id, count)
    with contextlib.closing(sqlite3.connect(db_path)) as conn, conn:
        conn.executemany(DEVICE_INSERT.format(p="?"), rows)
    return [r[1] for r in rows]


def migrated_sqlite(root: Path, name: str) -> tuple[Settings, Path]:
    """A fresh data dir under ``root`` with a migrated database; ``(settings, db file)``."""
    data_dir = root / name
    settings = bench_settings(data_dir)
    upgrade(settings)
    return settings, data_dir / "headless-ops.db"


# --------------------------------------------------------------------------- servers


_LOG_DIR: list[Path] = []


def _log_dir() -> Path:
    """One directory for this run's server logs, removed when the run ends.

    A failure prints the end of the log concerned before exiting.
    """
    if not _LOG_DIR:
        _LOG_DIR.append(Path(tempfile.mkdtemp(prefix="headless-ops-bench-logs-")))
        atexit.register(shutil.rmtree, _LOG_DIR[0], True)
    return _LOG_DIR[0]


@dataclass
class Server:
    """A server subprocess on 127.0.0.1:``port``, ready once ``GET ready_path`` answers 200."""

    name: str
    argv: list[str]
    env: Mapping[str, str]
    port: int
    ready_path: str = "/healthz"
    cwd: Path = REPO
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        """Start and wait until ready; the log is kept for a failure's diagnosis."""
        if self.log_path is None:
            self.log_path = Path(
                tempfile.mkstemp(prefix=f"{self.name}-", suffix=".log", dir=_log_dir())[1]
            )
        log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv, env=dict(self.env), cwd=self.cwd, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited at start:\n{self.log_tail()}")
            with contextlib.suppress(OSError):
                status, _ = asyncio.run(_get_once(self.port, self.ready_path))
                if status == 200:
                    return
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} not ready within {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """SIGINT (graceful, as Ctrl-C), then SIGKILL if it lingers."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def headless_ops_server(
    settings: Settings, name: str = "headless-ops", command: str = "serve"
) -> Server:
    """``python -m headless_ops serve`` (or ``api``: no scheduler) on ``settings``, one process."""
    port = free_port()
    return Server(
        name, [sys.executable, "-m", "headless_ops", command], server_env(settings, port), port
    )


async def _get_once(port: int, path: str) -> tuple[int, bytes]:
    conn = await HttpConnection.open(HOST, port)
    try:
        return await conn.request("GET", path)
    finally:
        await conn.close()


# --------------------------------------------------------------------------- HTTP client


class HttpConnection:
    """One keep-alive HTTP/1.1 connection, raw, so the client costs little CPU.

    Only what the benchmarks need: requests with a body or not, responses with a
    Content-Length (uvicorn always sends one for these endpoints).
    """

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        """Connect (TCP_NODELAY: small requests must not wait for Nagle)."""
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    @staticmethod
    def encode(
        method: str,
        path: str,
        host: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> bytes:
        """The bytes of one request (built once, sent many times)."""
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
        for name, value in (headers or {}).items():
            lines.append(f"{name}: {value}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        """Send prepared request bytes; ``(status, body)`` of the response."""
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
        if match is None:
            raise RuntimeError(f"response without Content-Length: {head[:200]!r}")
        body = await self.reader.readexactly(int(match.group(1)))
        return status, body

    async def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
    ) -> tuple[int, bytes]:
        """One request; ``(status, body)``."""
        return await self.send(self.encode(method, path, self.host, headers, body))

    async def close(self) -> None:
        """Close the socket."""
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError):
            await self.writer.wait_closed()


# --------------------------------------------------------------------------- load


@dataclass
class LoadResult:
    """What a load run measured."""

    requests: int
    seconds: float
    statuses: dict[int, int]
    tool: str

    @property
    def rps(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    def count(self, status: int) -> int:
        """Responses with ``status``."""
        return self.statuses.get(status, 0)


async def _closed_loop(
    port: int, raw: bytes, connections: int, duration: float, max_requests: int
) -> LoadResult:
    statuses: dict[int, int] = {}
    conns = [await HttpConnection.open(HOST, port) for _ in range(connections)]
    done = 0
    start = time.perf_counter()
    deadline = start + duration

    async def worker(conn: HttpConnection) -> None:
        nonlocal done
        while time.perf_counter() < deadline and done < max_requests:
            status, _ = await conn.send(raw)
            statuses[status] = statuses.get(status, 0) + 1
            done += 1

    try:
        await asyncio.gather(*(worker(c) for c in conns))
    finally:
        elapsed = time.perf_counter() - start
        for c in conns:
            await c.close()
    return LoadResult(done, elapsed, statuses, "python")


def run_closed_loop(
    port: int,
    raw: bytes,
    *,
    connections: int,
    duration: float,
    max_requests: int = 2_000_000,
) -> LoadResult:
    """``connections`` clients, each sending ``raw`` again as soon as its answer is read."""
    with contextlib.suppress(ImportError):
        import uvloop

        return uvloop.run(_closed_loop(port, raw, connections, duration, max_requests))
    return asyncio.run(_closed_loop(port, raw, connections, duration, max_requests))


_WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
{headers}
"""


def run_wrk(
    port: int,
    path: str,
    body: bytes,
    headers: Mapping[str, str],
    *,
    connections: int,
    duration: int,
    threads: int = 2,
) -> LoadResult | None:
    """A POST load by ``wrk`` (C, costs the server's CPU far less); None when not installed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    header_lines = "\n".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()
    )
    script = _WRK_SCRIPT.format(body=json.dumps(body.decode()), headers=header_lines)
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(
            [
                wrk,
                f"-t{threads}",
                f"-c{connections}",
                f"-d{duration}s",
                "--timeout",
                "30s",
                "-s",
                fh.name,
                f"http://{HOST}:{port}{path}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=duration + 60,
        ).stdout
    finally:
        os.unlink(fh.name)
    total = re.search(r"(\d+) requests in ([\d.]+)(m?s|m)\b", out)
    if total is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    seconds = float(total.group(2)) * {"s": 1.0, "ms": 0.001, "m": 60.0}[total.group(3)]
    requests = int(total.group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    # wrk counts 2xx and 3xx together: the caller checks what was stored (201 = created).
    statuses = {201: requests - (int(bad.group(1)) if bad else 0)}
    if bad:
        statuses[0] = int(bad.group(1))  # wrk does not say which; 0 = "not 2xx/3xx"
    if errors:
        print(f"    wrk socket errors: {errors.group(1)}")
    return LoadResult(requests, seconds, statuses, "wrk")


# --------------------------------------------------------------------------- statistics


def percentile(values: list[float], p: float) -> float:
    """The ``p``-th percentile (nearest rank) of ``values``."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


@contextlib.contextmanager
def scratch_dir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards (databases of a million rows are large)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
