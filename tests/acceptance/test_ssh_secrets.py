"""SSH credentials never leak while the ssh helper really uses them.

A simulated device accepts a planted password and a real private key (encrypted with a
planted passphrase). Operations run through the API and the scheduler with logs as JSON at
DEBUG — successes, an authentication failure, a host-key mismatch, a failing command — and
every response, every log line, the stored backup, the operations' results and errors, and
the database (SQLite's bytes; PostgreSQL's rows as text) are searched for the secrets.
"""

from __future__ import annotations

import contextlib
import io
import logging
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncssh
import httpx2
import pytest
import structlog

from headless_ops.logs import configure_logging
from headless_ops.simulator.ssh_device import running_device
from tests.conftest import Api
from tests.support.api_helpers import DEVICES, OPS
from tests.support.sched import running
from tests.support.ssh_ops import add_ssh_helper, fake_connection, register, wait_terminal


@pytest.fixture
def debug_json_logs() -> Iterator[io.StringIO]:
    """Every log line of the process (structlog and stdlib, asyncssh included) at DEBUG."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    stream = io.StringIO()
    real, sys.stderr = sys.stderr, stream
    try:
        configure_logging("DEBUG", "json")
    finally:
        sys.stderr = real
    try:
        yield stream
    finally:
        structlog.reset_defaults()
        root.handlers[:], level = saved
        root.setLevel(level)


def _dump_database(api: Api) -> bytes:
    settings = api.runtime.settings
    if settings.is_sqlite:
        return b"".join(p.read_bytes() for p in sorted(settings.data_dir.glob("headless-ops.db*")))
    import psycopg

    url = settings.effective_database_url.replace("+psycopg", "")
    with psycopg.connect(url) as conn:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        return "\n".join(
            str(row[0]) for t in tables for row in conn.execute(f'SELECT x::text FROM "{t}" AS x')
        ).encode()


async def test_ssh_password_and_private_key_never_leak(
    api: Api, tmp_path: Path, debug_json_logs: io.StringIO
) -> None:
    password = f"PLANTEDpw{secrets.token_hex(8)}"
    wrong_password = f"PLANTEDwrong{secrets.token_hex(8)}"
    passphrase = f"PLANTEDphrase{secrets.token_hex(8)}"
    key = asyncssh.generate_private_key("ssh-ed25519")
    private_key = key.export_private_key("openssh", passphrase=passphrase).decode()
    key_body = private_key.splitlines()[1]  # a line of the encrypted key stands for it
    clear_key_body = key.export_private_key("openssh").decode().splitlines()[1]
    markers = {
        "password": password,
        "wrong password": wrong_password,
        "passphrase": passphrase,
        "private key": key_body,
        "private key (decrypted)": clear_key_body,
    }
    public_key = key.export_public_key("openssh").decode()

    add_ssh_helper(api)
    headers = await api.auth()
    responses: list[httpx2.Response] = []

    async def call(method: str, url: str, **kwargs: Any) -> httpx2.Response:
        r = await api.client.request(method, url, headers=headers, **kwargs)
        responses.append(r)
        return r

    backups = tmp_path / "backups"
    async with (
        running_device(tmp_path / "dev", password=password, client_public_key=public_key) as dev,
        running(api.runtime.make_scheduler()),
    ):
        (dev.root / "etc" / "device.conf").write_text("hostname edge-1\n")
        with_password = await register(
            api, headers, "pw", fake_connection(dev, "linux", password=password)
        )
        key_conn = fake_connection(
            dev, "linux", private_key=private_key, private_key_passphrase=passphrase
        )
        del key_conn["password"]
        with_key = await register(api, headers, "key", key_conn)
        wrong = await register(
            api, headers, "wrong", fake_connection(dev, "linux", password=wrong_password)
        )
        other_key = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh")
        mismatch = await register(
            api,
            headers,
            "mismatch",
            fake_connection(dev, "linux", password=password, host_key=other_key.decode().strip()),
        )
        ops = []
        for device_id, op_type, params in [
            (with_password, "backup_configuration", {"backup_location": backups.as_uri() + "/"}),
            (with_key, "backup_configuration", {"backup_location": backups.as_uri() + "/"}),
            (with_key, "get_parameters", {"names": ["DeviceInfo."]}),
            (wrong, "backup_configuration", {"backup_location": backups.as_uri() + "/"}),
            (mismatch, "reboot", None),
            (with_password, "firmware_update", {"firmware_version": "9.9"}),
        ]:
            body: dict[str, Any] = {"device_id": device_id, "operation_type": op_type}
            if params is not None:
                body["parameters"] = params
            r = await call("POST", OPS, json=body)
            assert r.status_code == 201, r.text
            ops.append(r.json()["id"])
        finals = [await wait_terminal(api, headers, op_id) for op_id in ops]
        assert [f["status"] for f in finals] == [
            "completed",
            "completed",
            "completed",
            "failed",
            "failed",
            "failed",
        ], finals
        assert finals[3]["error"]["code"] == "authentication_failed"
        assert finals[4]["error"]["code"] == "host_key_mismatch"
        assert finals[5]["error"]["code"] == "firmware_not_found"
        for op_id in ops:
            await call("GET", f"{OPS}{op_id}/")
        await call("GET", OPS, params={"update_status": "true"})
        for device_id in (with_password, with_key, wrong, mismatch):
            await call("GET", f"{DEVICES}{device_id}/")
            await call("GET", f"{DEVICES}{device_id}/backups/")
        await call("GET", DEVICES)
        await call("GET", "/metrics")

    def leaks(data: bytes | str) -> list[str]:
        raw = data.encode() if isinstance(data, str) else data
        return [name for name, value in markers.items() if value.encode() in raw]

    for r in responses:
        assert leaks(r.content) == [], f"{r.request.method} {r.request.url}"
        assert leaks("\n".join(f"{k}: {v}" for k, v in r.headers.multi_items())) == []
    log = debug_json_logs.getvalue()
    assert '"level": "debug"' in log or '"level":"debug"' in log  # DEBUG really was on
    assert "authentication_failed" in log  # the failure is logged, without the secret
    assert leaks(log) == []
    for stored in backups.rglob("*"):
        if stored.is_file():
            assert leaks(stored.read_bytes()) == [], stored
    with contextlib.suppress(FileNotFoundError):
        assert leaks(_dump_database(api)) == []
