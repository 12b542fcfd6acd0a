"""Running SSH operations end to end in tests: the real helper bound to a runtime, devices
registered through the API for simulated or real SSH devices, and waiting for outcomes."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from headless_ops.helpers.ssh import SshHelper
from headless_ops.simulator.ssh_device import DEFAULT_PASSWORD, FakeDevice
from tests.conftest import Api
from tests.support.api_helpers import DEVICES, OPS

__all__ = [
    "TERMINAL",
    "add_ssh_helper",
    "fake_connection",
    "register",
    "run_op",
    "wait_terminal",
]

TERMINAL = {"completed", "failed", "cancelled", "expired"}


def add_ssh_helper(api: Api) -> SshHelper:
    """The real ``ssh`` helper on the test's runtime, with quick reboot polling."""
    settings = api.runtime.settings
    settings.ssh_reboot_poll_s = 0.1
    settings.ssh_reboot_wait_s = 20
    settings.ssh_command_timeout_s = 10
    settings.ssh_connect_timeout_s = 5
    settings.retry_base_s = 0.05
    settings.retry_cap_s = 0.2
    helper = SshHelper()
    api.runtime.add_helper(helper)
    return helper


def fake_connection(dev: FakeDevice, profile: str, **extra: Any) -> dict[str, Any]:
    """A device's connection for a simulated device; paths point into its root."""
    root = dev.root
    profile_vars = {
        "linux": {
            "config_path": str(root / "etc" / "device.conf"),
            "version_path": str(root / "etc" / "version"),
            "upload_dir": str(root / "tmp"),
        },
        "openwrt": {"version_file": str(root / "etc" / "version"), "upload_dir": str(root / "tmp")},
        "ios": {},
    }[profile]
    connection: dict[str, Any] = {
        "host": dev.host,
        "port": dev.port,
        "username": "admin",
        "password": DEFAULT_PASSWORD,
        "profile": profile,
        "profile_vars": profile_vars,
        "host_key": dev.host_key_openssh,
        "host_key_policy": "require",
    }
    connection.update(extra)
    return connection


async def register(api: Api, headers: dict[str, str], name: str, connection: dict[str, Any]) -> str:
    """Create an ``ssh`` device; returns its id."""
    r = await api.client.post(
        DEVICES, json={"name": name, "protocol": "ssh", "connection": connection}, headers=headers
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def wait_terminal(
    api: Api,
    headers: dict[str, str],
    op_id: str,
    timeout: float = 60,  # noqa: ASYNC109
) -> dict[str, Any]:
    """Poll ``GET /{id}/`` until the operation is finished; returns it."""
    deadline = time.monotonic() + timeout
    while True:
        r = await api.client.get(f"{OPS}{op_id}/", headers=headers)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in TERMINAL:
            return body
        assert time.monotonic() < deadline, f"operation still {body['status']}: {body}"
        await asyncio.sleep(0.05)


async def run_op(
    api: Api,
    headers: dict[str, str],
    device_id: str,
    operation_type: str,
    parameters: dict[str, Any] | None = None,
    *,
    timeout: float = 60,  # noqa: ASYNC109 - a test bound
    **extra: Any,
) -> dict[str, Any]:
    """POST an operation and wait for its end (a scheduler must be running)."""
    body = {"device_id": device_id, "operation_type": operation_type, **extra}
    if parameters is not None:
        body["parameters"] = parameters
    r = await api.client.post(OPS, json=body, headers=headers)
    assert r.status_code == 201, r.text
    return await wait_terminal(api, headers, str(r.json()["id"]), timeout)


def image_file(path: Path, version: str, body: str = "") -> bytes:
    """A firmware image the simulated devices understand (first line ``VERSION=``)."""
    data = f"VERSION={version}\n{body}".encode()
    path.write_bytes(data)
    return data
