"""The ssh helper against OpenSSH's own sshd: a real Linux "device" (a throwaway user on a
loopback sshd), driven through the API and the scheduler on both engines."""

from __future__ import annotations

import hashlib
from typing import Any

from tests.conftest import Api
from tests.support.sched import running
from tests.support.ssh_ops import add_ssh_helper, register, run_op
from tests.support.sshd import SshdDevice

TEMPLATES = "/api/v1/config_template/"
FIRMWARE = "/api/v1/firmware/"


def _connection(dev: SshdDevice, **extra: Any) -> dict[str, Any]:
    connection: dict[str, Any] = {
        "host": dev.host,
        "port": dev.port,
        "username": dev.username,
        "private_key": dev.private_key,
        "host_key": dev.host_key,
        "profile": "linux",
        "profile_vars": {
            "config_path": str(dev.path("etc", "app.conf")),
            "version_path": str(dev.path("etc", "version")),
            "upload_dir": str(dev.path("uploads")),
        },
    }
    connection.update(extra)
    return connection


async def test_backup_copies_a_real_file_and_pins_the_host_key(
    api: Api, sshd_device: SshdDevice
) -> None:
    dev = sshd_device
    dev.mkdir("etc")
    config = "# the real thing\nlisten 0.0.0.0:8080\nworkers 4\n"
    dev.write("etc/app.conf", config)
    dev.write("etc/version", "1.0.0\n")
    add_ssh_helper(api)
    headers = await api.auth()
    async with running(api.runtime.make_scheduler()):
        connection = _connection(dev, host_key_policy="pin_on_first_use")
        del connection["host_key"]  # nothing pinned: captured on this first contact
        device_id = await register(api, headers, "linux-1", connection)
        location = (api.runtime.settings.allowed_backup_roots()[0]).as_uri() + "/"
        op = await run_op(
            api, headers, device_id, "backup_configuration", {"backup_location": location}
        )
        assert op["status"] == "completed", op
        assert op["result"]["method"] == "sftp"
        assert op["result"]["sha256"] == hashlib.sha256(config.encode()).hexdigest()
        backup_id = op["result"]["backup_id"]
        r = await api.client.get(
            f"/api/v1/inventory_device/{device_id}/backups/{backup_id}/content", headers=headers
        )
        assert r.status_code == 200 and r.text == config
        # Nothing was pinned and the device was set to pin on first use: the key is pinned.
        r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=headers)
        assert r.json()["connection"]["host_key"] == dev.host_key


async def test_configuration_push_changes_a_real_file_and_records_the_diff(
    api: Api, sshd_device: SshdDevice
) -> None:
    dev = sshd_device
    dev.mkdir("etc")
    dev.write("etc/app.conf", "listen 0.0.0.0:8080\nworkers 4\n")
    dev.write("etc/version", "1.0.0\n")
    add_ssh_helper(api)
    headers = await api.auth()
    r = await api.client.post(
        TEMPLATES,
        json={"name": "app", "content": "listen {{ listen }}\nworkers {{ workers }}\n"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    connection = _connection(dev, host_key=dev.host_key, host_key_policy="require")
    if dev.password is not None:  # password login too, where the fixture could set one
        connection = {**connection, "password": dev.password}
        del connection["private_key"]
    async with running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "linux-2", connection)
        op = await run_op(
            api,
            headers,
            device_id,
            "configuration_sync",
            {"config_template": "app", "variables": {"listen": "127.0.0.1:9090", "workers": 8}},
        )
    assert op["status"] == "completed", op
    assert dev.path("etc", "app.conf").read_text() == "listen 127.0.0.1:9090\nworkers 8\n"
    diff = op["result"]["diff"]
    assert "-listen 0.0.0.0:8080" in diff and "+listen 127.0.0.1:9090" in diff
    assert "-workers 4" in diff and "+workers 8" in diff


async def test_firmware_update_uploads_verifies_installs_and_checks_the_version(
    api: Api, sshd_device: SshdDevice
) -> None:
    dev = sshd_device
    dev.mkdir("etc")
    dev.mkdir("uploads")
    dev.write("etc/version", "1.0.0\n")
    version_file = dev.path("etc", "version")
    installer = f"#!/bin/sh\nset -e\necho installing 2.0.0\nprintf '2.0.0\\n' > '{version_file}'\n"
    add_ssh_helper(api)
    headers = await api.auth()
    r = await api.client.post(
        FIRMWARE,
        files={"file": ("appliance-2.0.0.run", installer.encode())},
        data={"version": "2.0.0", "sha256": hashlib.sha256(installer.encode()).hexdigest()},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    async with running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "linux-3", _connection(dev))
        op = await run_op(
            api,
            headers,
            device_id,
            "firmware_update",
            {"firmware_version": "2.0.0", "auto_reboot": False},
        )
    assert op["status"] == "completed", op
    result = op["result"]
    assert result["previous_version"] == "1.0.0"
    assert result["firmware_version"] == "2.0.0" and result["version_verified"] is True
    uploaded = dev.path("uploads", "appliance-2.0.0.run")
    assert uploaded.read_text() == installer
    assert version_file.read_text() == "2.0.0\n"
    r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=headers)
    assert r.json()["firmware_version"] == "2.0.0"


async def test_a_failing_install_script_fails_the_operation_with_its_exit_status(
    api: Api, sshd_device: SshdDevice
) -> None:
    dev = sshd_device
    dev.mkdir("etc")
    dev.mkdir("uploads")
    dev.write("etc/version", "1.0.0\n")
    installer = "#!/bin/sh\necho 'flash write failed' >&2\nexit 3\n"
    add_ssh_helper(api)
    headers = await api.auth()
    r = await api.client.post(
        FIRMWARE,
        files={"file": ("bad-3.0.run", installer.encode())},
        data={"version": "3.0"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    async with running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "linux-4", _connection(dev))
        op = await run_op(
            api, headers, device_id, "firmware_update", {"firmware_version": "3.0"}, max_attempts=3
        )
    assert op["status"] == "failed", op
    assert op["error"]["code"] == "command_failed"
    assert "status 3" in op["error"]["message"] and "flash write failed" in op["error"]["message"]
    assert op["attempts"] == 1  # a failing installer is not retried
