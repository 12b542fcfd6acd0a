"""The real ``headless-ops`` command as a subprocess: ``serve`` on a loopback port, one-shot CLI runs.

Acceptance tests drive the server exactly as a user would: ``python -m headless_ops serve``
in its own process, over real HTTP, with its output captured to files so a test can read
what it printed (the admin token, its logs). Each database a test needs is made here too:
SQLite in the data dir (``serve`` migrates it itself), or a fresh PostgreSQL database.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import httpx2
import psycopg
import pytest

from tests.conftest import drop_pg_database, fresh_pg_database
from tests.support.postgres import PostgresCluster

__all__ = [
    "GRACEFUL_EXIT",
    "ServerProcess",
    "cli_env",
    "empty_pg_database",
    "engine_database",
    "free_port",
    "run_cli",
    "start_server",
]

#: Exit codes of a server that shut down by itself on SIGTERM: uvicorn re-raises the signal
#: once its graceful shutdown is done, so -SIGTERM is as clean as 0. -SIGKILL is not.
GRACEFUL_EXIT = frozenset({0, -signal.SIGTERM})

_TOKEN_LINE = re.compile(r"^admin token \(shown once, keep it\): (\S+)$", re.M)


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cli_env(
    data_dir: Path, database_url: str | None = None, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a CLI subprocess: none of the caller's HEADLESS_OPS_* settings,
    only the data dir, the database (when not SQLite) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADLESS_OPS_")}
    env["PYTHONUNBUFFERED"] = "1"  # stdout is a file: see the token line as soon as printed
    env["HEADLESS_OPS_DATA_DIR"] = str(data_dir)
    # Each server's ACS on a port of its own (tests run servers side by side).
    env["HEADLESS_OPS_CWMP_PORT"] = "0"
    if database_url:
        env["HEADLESS_OPS_DATABASE_URL"] = database_url
    env.update(extra or {})
    return env


def run_cli(
    *args: str,
    data_dir: Path,
    database_url: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """``python -m headless_ops <args>``; never raises on a non-zero exit (tests assert it)."""
    return subprocess.run(
        [sys.executable, "-m", "headless_ops", *args],
        env=cli_env(data_dir, database_url, env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@dataclass
class ServerProcess:
    """A running ``headless-ops serve``; ``stop()`` or ``kill()`` ends it."""

    proc: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    stdout_path: Path
    stderr_path: Path
    admin_token: str | None = None
    _files: list[IO[bytes]] = field(default_factory=list, repr=False)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    def stdout(self) -> str:
        """Everything the server printed on stdout so far."""
        return self.stdout_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        """Everything the server logged on stderr so far."""
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self, token: str | None = None, timeout: float = 30) -> httpx2.Client:
        """A synchronous client on this server, with ``token`` (default: the admin's)."""
        token = token or self.admin_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx2.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._close_files()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM and wait for a graceful exit; SIGKILL if it does not come. Returns the exit
        code (in :data:`GRACEFUL_EXIT` unless it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._close_files()
        return int(self.proc.returncode)

    def _close_files(self) -> None:
        for fh in self._files:
            fh.close()
        self._files.clear()


def start_server(
    data_dir: Path,
    *,
    database_url: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    startup_timeout: float = 60,
    log_name: str = "server",
) -> ServerProcess:
    """Start ``python -m headless_ops serve`` on a free port and wait until /healthz answers.

    Output goes to ``<data_dir>/../<log_name>-<n>.stdout|.stderr`` (outside the data dir, so
    a test reading the database files does not also read the logs). A port taken between
    choosing it and binding it makes the process exit at once; then another port is tried.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    last_error = ""
    for attempt in range(3):
        port = free_port()
        stem = data_dir.parent / f"{log_name}-{port}"
        out_path, err_path = stem.with_suffix(".stdout"), stem.with_suffix(".stderr")
        out = out_path.open("wb")
        err = err_path.open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "headless_ops", "serve", "--port", str(port), *args],
            env=cli_env(data_dir, database_url, {"HEADLESS_OPS_HOST": "127.0.0.1", **(env or {})}),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
        )
        server = ServerProcess(proc, port, data_dir, out_path, err_path, _files=[out, err])
        try:
            _wait_healthy(server, startup_timeout)
        except _ExitedEarly:
            server.stop()
            last_error = server.stderr()
            if "address already in use" in last_error.lower() and attempt < 2:
                continue
            raise RuntimeError(f"headless-ops serve exited at start:\n{last_error}") from None
        except BaseException:
            server.stop()
            raise
        match = _TOKEN_LINE.search(server.stdout())
        server.admin_token = match.group(1) if match else None
        return server
    raise RuntimeError(f"headless-ops serve could not bind a port:\n{last_error}")


class _ExitedEarly(Exception):
    pass


def _wait_healthy(server: ServerProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise _ExitedEarly
        try:
            r = httpx2.get(f"{server.base_url}/healthz", timeout=2)
            if r.status_code == 200:
                return
        except httpx2.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"headless-ops serve did not answer /healthz within {timeout}s")


def empty_pg_database(cluster: PostgresCluster, name: str) -> str:
    """Create an empty (unmigrated) database ``name``; returns its URL."""
    with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return cluster.url(name)


@contextlib.contextmanager
def engine_database(engine: str, request: pytest.FixtureRequest) -> Iterator[str | None]:
    """The database URL for a server of ``engine``: ``None`` for SQLite (the data dir holds
    it; ``serve`` migrates it), else a fresh migrated PostgreSQL database, dropped afterwards.
    """
    if engine == "sqlite":
        yield None
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = fresh_pg_database(cluster)
    try:
        yield cluster.url(name)
    finally:
        drop_pg_database(cluster, name)
