"""Device secrets never leak: not in a response, not in the log at DEBUG, not in the database.

``headless-ops serve`` runs as a subprocess with ``HEADLESS_OPS_LOG_LEVEL=DEBUG``. Devices get
planted, distinctive secrets (SSH password, private key and its passphrase; CWMP CPE and
connection-request passwords); then operations are created, listed (with a status refresh),
read and cancelled, devices patched (rotating a password), read and listed, and a few bad
requests carrying secrets are refused. Every response body and header, the server's
stdout/stderr, and the database in raw form (SQLite: the file bytes, WAL included;
PostgreSQL: every row of every table as text) are searched for the planted strings. The
bearer token's secret is held to the same standard (it is printed once on stdout, by design).
Both engines.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
from pathlib import Path

import httpx2
import psycopg
import pytest
from cryptography.fernet import Fernet

from tests.support.server import (
    GRACEFUL_EXIT,
    ServerProcess,
    engine_database,
    free_port,
    start_server,
)

DEVICES = "/api/v1/inventory_device/"
OPS = "/api/v1/inventory_device_headless_operation/"


class Planted:
    """Secrets with a random marker each, so no other byte sequence can match by chance."""

    def __init__(self) -> None:
        def mark(kind: str) -> str:
            return f"PLANTED{kind}{secrets.token_hex(8)}"

        self.password = mark("sshpw")
        self.new_password = mark("sshpw2")
        self.key_marker = mark("key")
        self.private_key = (
            "-----BEGIN OPENSSH PRIVATE KEY-----\n"
            f"b3BlbnNzaC1rZXktdjEAAAAA{self.key_marker}AAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
            "-----END OPENSSH PRIVATE KEY-----\n"
        )
        self.passphrase = mark("phrase")
        self.cpe_password = mark("cpepw")
        self.cr_password = mark("crpw")
        self.refused_password = mark("refused")
        #: Not a secret: the control that shows the searches do see plain text.
        self.username = mark("user")

    def markers(self) -> dict[str, str]:
        """Single-line strings that must appear nowhere (the key's body stands for the key)."""
        return {
            "ssh password": self.password,
            "rotated ssh password": self.new_password,
            "private key": self.key_marker,
            "key passphrase": self.passphrase,
            "cpe_password": self.cpe_password,
            "connection_request_password": self.cr_password,
            "password of a refused request": self.refused_password,
        }


def _leaks(haystack: bytes | str, markers: dict[str, str]) -> list[str]:
    data = haystack.encode() if isinstance(haystack, str) else haystack
    return [name for name, value in markers.items() if value.encode() in data]


class Recorder:
    """Makes requests and keeps every response, to search them all afterwards."""

    def __init__(self, server: ServerProcess) -> None:
        self.http = server.client()
        self.responses: list[httpx2.Response] = []

    def __call__(self, method: str, url: str, status: int, **kwargs: object) -> httpx2.Response:
        r = self.http.request(method, url, **kwargs)  # type: ignore[arg-type]
        self.responses.append(r)
        assert r.status_code == status, f"{method} {url}: {r.status_code} {r.text}"
        return r


def _exercise(call: Recorder, p: Planted) -> None:
    closed = free_port()  # nothing listens: any helper trying the device fails at once
    ssh = call(
        "POST",
        DEVICES,
        201,
        json={
            "id": "dev_secret_ssh",
            "name": "secret-ssh",
            "protocol": "ssh",
            "connection": {
                "host": "127.0.0.1",
                "port": closed,
                "username": p.username,
                "password": p.password,
                "private_key": p.private_key,
                "private_key_passphrase": p.passphrase,
            },
        },
    ).json()
    # The names of the secrets are shown (so they were stored), never their values.
    assert ssh["secrets_set"] == ["password", "private_key", "private_key_passphrase"]
    assert set(ssh["connection"]) >= {"host", "port", "username"}
    cwmp = call(
        "POST",
        DEVICES,
        201,
        json={
            "id": "dev_secret_cwmp",
            "name": "secret-cwmp",
            "protocol": "cwmp",
            "connection": {
                "oui": "202BC1",
                "serial_number": "SECRET0001",
                "cpe_username": "cpe",
                "cpe_password": p.cpe_password,
                "connection_request_url": f"http://127.0.0.1:{closed}/cr",
                "connection_request_username": "acs",
                "connection_request_password": p.cr_password,
            },
        },
    ).json()
    assert cwmp["secrets_set"] == ["connection_request_password", "cpe_password"]

    # Refused requests that carry a secret must not echo it back or log it.
    refused = {
        "name": "refused",
        "protocol": "ssh",
        "connection": {"host": "bad host!", "username": "x", "password": p.refused_password},
    }
    call("POST", DEVICES, 400, json=refused)
    call(
        "POST",
        DEVICES,
        400,
        content=json.dumps(refused).encode()[:-3],  # malformed JSON
        headers={"Content-Type": "application/json"},
    )
    call(
        "PATCH",
        "/api/v1/inventory_device/dev_secret_ssh/",
        400,
        json={"connection": {"password": p.refused_password, "port": "22"}},
    )

    # Operations on both devices: due now (the scheduler takes them) and far in the future.
    made = []
    for device in ("dev_secret_ssh", "dev_secret_cwmp"):
        made.append(
            call("POST", OPS, 201, json={"device_id": device, "operation_type": "reboot"}).json()
        )
        made.append(
            call(
                "POST",
                OPS,
                201,
                json={
                    "device_id": device,
                    "operation_type": "firmware_update",
                    "scheduled_at": "2099-01-01T00:00:00Z",
                    "parameters": {"firmware_version": "9.9.9"},
                },
            ).json()
        )
    listed = call("GET", OPS, 200, params={"update_status": "true"}).json()
    assert {op["id"] for op in made} <= {op["id"] for op in listed["results"]}
    for op in made:
        call("GET", f"{OPS}{op['id']}/", 200)
    call("POST", f"{OPS}{made[1]['id']}/cancel/", 200)
    call("GET", f"{OPS}?device_id=dev_secret_cwmp&update_status=true", 200)

    # Rotate the SSH password and touch the CWMP connection (both re-seal the secrets).
    patched = call(
        "PATCH",
        "/api/v1/inventory_device/dev_secret_ssh/",
        200,
        json={"connection": {"password": p.new_password}, "labels": {"site": "lab"}},
    ).json()
    assert patched["secrets_set"] == ["password", "private_key", "private_key_passphrase"]
    call(
        "PATCH",
        "/api/v1/inventory_device/dev_secret_cwmp/",
        200,
        json={"connection": {"connection_request_username": "acs2"}},
    )
    for device in ("dev_secret_ssh", "dev_secret_cwmp"):
        call("GET", f"{DEVICES}{device}/", 200)
    devices = call("GET", DEVICES, 200).json()
    assert {d["id"] for d in devices["results"]} == {"dev_secret_ssh", "dev_secret_cwmp"}
    call("GET", DEVICES, 200, params={"protocol": "ssh", "name": "secret-ssh"})
    call("GET", "/api/v1/openapi.json", 200)


def _sqlite_files(data_dir: Path) -> bytes:
    """Every byte of the database: main file, WAL and shared memory."""
    files = sorted(data_dir.glob("headless-ops.db*"))
    assert data_dir / "headless-ops.db" in files
    return b"".join(f.read_bytes() for f in files)


def _postgres_rows(url: str) -> tuple[str, list[str]]:
    """Every row of every table as text, and the sealed device secrets."""
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
            )
        ]
        assert {"devices", "operations", "api_tokens"} <= set(tables)
        text = "\n".join(
            str(row[0])
            for table in tables
            for row in conn.execute(f'SELECT t::text FROM "{table}" AS t')  # every column
        )
        sealed = [r[0] for r in conn.execute("SELECT secrets FROM devices ORDER BY id")]
    return text, sealed


@pytest.mark.parametrize("engine", ["sqlite", "postgresql"])
def test_planted_secrets_never_leak(
    engine: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    p = Planted()
    data_dir = tmp_path / "data"
    with engine_database(engine, request) as database_url:
        server = start_server(
            data_dir, database_url=database_url, env={"HEADLESS_OPS_LOG_LEVEL": "DEBUG"}
        )
        try:
            assert server.admin_token
            call = Recorder(server)
            try:
                _exercise(call, p)
            finally:
                call.http.close()
            while_running = _sqlite_files(data_dir) if engine == "sqlite" else b""
        finally:
            assert server.stop() in GRACEFUL_EXIT
        markers = p.markers()
        token_secret = server.admin_token.split(".", 1)[1]
        everything = {**markers, "bearer token secret": token_secret}

        control = {"username": p.username}
        assert any(_leaks(r.content, control) for r in call.responses)
        for r in call.responses:
            where = f"{r.request.method} {r.request.url} -> {r.status_code}"
            assert _leaks(r.content, everything) == [], where
            headers = "\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())
            assert _leaks(headers, everything) == [], where

        log = server.stderr()
        assert "[debug" in log  # DEBUG really was on
        assert _leaks(log, everything) == []
        # stdout shows the admin token once, on purpose; nothing else secret.
        assert _leaks(server.stdout(), markers) == []

        if engine == "sqlite":
            stored = while_running + _sqlite_files(data_dir)
            assert _leaks(stored, control) == ["username"]  # plain text is found where it is
            assert _leaks(stored, everything) == []
            with contextlib.closing(sqlite3.connect(data_dir / "headless-ops.db")) as conn:
                sealed = [r[0] for r in conn.execute("SELECT secrets FROM devices ORDER BY id")]
        else:
            assert database_url is not None
            text, sealed = _postgres_rows(database_url)
            assert _leaks(text, control) == ["username"]  # plain text is found where it is
            assert _leaks(text, everything) == []

    # Not dropped either: the secrets are there, sealed under the data dir's key.
    box = Fernet((data_dir / "secret.key").read_bytes().strip())
    cwmp, ssh = (json.loads(box.decrypt(token.encode())) for token in sealed)
    assert ssh["password"] == p.new_password
    assert ssh["private_key"] == p.private_key
    assert ssh["private_key_passphrase"] == p.passphrase
    assert cwmp == {"cpe_password": p.cpe_password, "connection_request_password": p.cr_password}
