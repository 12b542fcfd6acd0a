"""The ssh helper under faults, through the API and the scheduler on both engines: slow
replies, a session dropped mid-command, wrong host key, bad credentials, refused
connections — each classified retryable or permanent as it should be, and saying why."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncssh

from headless_ops.simulator.ssh_device import running_device
from tests.conftest import Api
from tests.support.api_helpers import DEVICES
from tests.support.sched import eventually, running
from tests.support.ssh_ops import (
    add_ssh_helper,
    fake_connection,
    register,
    run_op,
    wait_terminal,
)


def _backup(tmp_path: Path) -> dict[str, Any]:
    return {"backup_location": (tmp_path / "backups").as_uri() + "/"}


async def test_slow_replies_time_out_and_are_retried(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    api.runtime.settings.ssh_command_timeout_s = 0.3
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "slow", fake_connection(dev, "openwrt"))
        dev.faults.delay_s = 1.0
        op = await run_op(
            api, headers, device_id, "backup_configuration", _backup(tmp_path), max_attempts=2
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "command_timeout"
        assert op["attempts"] == 2  # retryable: both attempts were made
        assert "uci export" in op["error"]["message"]
        # Replies fast again: it works.
        dev.faults.delay_s = 0
        op = await run_op(api, headers, device_id, "backup_configuration", _backup(tmp_path))
        assert op["status"] == "completed", op


async def test_a_session_dropped_mid_command_is_retried_and_then_succeeds(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    api.runtime.settings.retry_base_s = 0.5  # time for the test to lift the fault
    api.runtime.settings.retry_cap_s = 0.5
    api.runtime.settings.retry_jitter = 0.0
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "drop", fake_connection(dev, "openwrt"))
        dev.faults.disconnect_on = "uci export"
        r = await api.client.post(
            "/api/v1/inventory_device_headless_operation/",
            json={
                "device_id": device_id,
                "operation_type": "backup_configuration",
                "parameters": _backup(tmp_path),
                "max_attempts": 3,
            },
            headers=headers,
        )
        assert r.status_code == 201, r.text
        op_id = r.json()["id"]

        async def dropped_once() -> bool:
            return dev.commands.count("uci export") >= 1

        await eventually(dropped_once)
        dev.faults.disconnect_on = None
        op = await wait_terminal(api, headers, op_id)
        assert op["status"] == "completed", op
        assert op["attempts"] >= 2
        failures = [a for a in op["history"] if a.get("error_code") == "connection_lost"]
        assert failures, op["history"]


async def test_a_dropped_session_at_max_attempts_fails_as_connection_lost(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", kind="ios") as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(api, headers, "drop-ios", fake_connection(dev, "ios"))
        dev.faults.disconnect_on = "show running-config"
        op = await run_op(
            api, headers, device_id, "backup_configuration", _backup(tmp_path), max_attempts=1
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "connection_lost"


async def test_wrong_host_key_is_refused_before_credentials_and_not_retried(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    other = asyncssh.generate_private_key("ssh-ed25519")
    other_text = other.export_public_key("openssh").decode().strip()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(
            api, headers, "mitm", fake_connection(dev, "linux", host_key=other_text)
        )
        op = await run_op(api, headers, device_id, "reboot", max_attempts=3)
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "host_key_mismatch"
        assert op["attempts"] == 1
        offered = asyncssh.import_public_key(dev.host_key_openssh).get_fingerprint("sha256")
        assert offered in op["error"]["message"]
        assert other.get_fingerprint("sha256") in op["error"]["message"]
        assert dev.connections_accepted == 0  # never authenticated: no password was sent


async def test_a_host_key_that_changes_after_being_pinned_is_refused(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "a") as first,
        running_device(tmp_path / "b") as second,
        running(api.runtime.make_scheduler()),
    ):
        conn = fake_connection(first, "linux", host_key_policy="pin_on_first_use")
        del conn["host_key"]
        device_id = await register(api, headers, "tofu", conn)
        op = await run_op(api, headers, device_id, "get_parameters", {"names": ["DeviceInfo."]})
        assert op["status"] == "completed", op
        r = await api.client.get(f"{DEVICES}{device_id}/", headers=headers)
        assert r.json()["connection"]["host_key"] == first.host_key_openssh
        # The "same device" now answers with another key (the address moved to another box).
        r = await api.client.patch(
            f"{DEVICES}{device_id}/", json={"connection": {"port": second.port}}, headers=headers
        )
        assert r.status_code == 200, r.text
        op = await run_op(api, headers, device_id, "get_parameters", {"names": ["DeviceInfo."]})
        assert op["status"] == "failed" and op["error"]["code"] == "host_key_mismatch", op
        assert second.connections_accepted == 0


async def test_require_policy_without_a_pinned_key_refuses_to_connect(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        conn = fake_connection(dev, "linux")
        del conn["host_key"]
        device_id = await register(api, headers, "strict", conn)
        op = await run_op(api, headers, device_id, "reboot")
        assert op["status"] == "failed" and op["error"]["code"] == "host_key_required", op
        assert dev.connections_accepted == 0


async def test_bad_credentials_are_permanent(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(
            api, headers, "badpw", fake_connection(dev, "linux", password="not-the-password")
        )
        op = await run_op(api, headers, device_id, "reboot", max_attempts=3)
        assert op["status"] == "failed" and op["error"]["code"] == "authentication_failed", op
        assert op["attempts"] == 1
        assert "not-the-password" not in str(op)
        dev.faults.reject_all_auth = True
        good = await register(api, headers, "rejected", fake_connection(dev, "linux"))
        op = await run_op(api, headers, good, "reboot", max_attempts=3)
        assert op["error"]["code"] == "authentication_failed" and op["attempts"] == 1


async def test_refused_and_closed_connections_are_retryable(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "refusing", fake_connection(dev, "linux"))
        dev.faults.refuse_connections = True
        op = await run_op(api, headers, device_id, "reboot", max_attempts=2)
        assert op["status"] == "failed", op
        assert op["attempts"] == 2
        assert op["error"]["code"] in {"connection_lost", "ssh_error"}, op
    # Nothing listens any more: connection refused, retryable.
    async with running(api.runtime.make_scheduler()):
        op = await run_op(api, headers, device_id, "reboot", max_attempts=2)
    assert op["status"] == "failed" and op["attempts"] == 2
    assert op["error"]["code"] == "connection_refused", op


async def test_a_host_that_accepts_tcp_but_never_speaks_ssh_times_out_retryably(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    api.runtime.settings.ssh_connect_timeout_s = 0.3
    headers = await api.auth()
    held: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # accept, then say nothing

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with running(api.runtime.make_scheduler()):
            device_id = await register(
                api,
                headers,
                "blackhole",
                {
                    "host": "127.0.0.1",
                    "port": port,
                    "username": "admin",
                    "password": "x",
                    "host_key_policy": "pin_on_first_use",
                },
            )
            op = await run_op(api, headers, device_id, "reboot", max_attempts=2)
        assert op["status"] == "failed" and op["attempts"] == 2, op
        assert op["error"]["code"] == "timeout", op
    finally:
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()
