"""Every SSH operation type end to end — API, scheduler, the ssh helper, a simulated device
over real SSH — on both engines, with the device's state checked afterwards."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

from headless_ops.simulator.ssh_device import running_device
from tests.conftest import Api
from tests.support.api_helpers import OPS
from tests.support.sched import running
from tests.support.ssh_ops import add_ssh_helper, fake_connection, register, run_op

FIRMWARE = "/api/v1/firmware/"
TEMPLATES = "/api/v1/config_template/"


def _filename(version: str) -> str:
    return "fw-" + version.replace("(", "_").replace(")", "_") + ".bin"


async def _upload(api: Api, headers: dict[str, str], version: str, **fields: str) -> dict[str, Any]:
    data = f"VERSION={version}\n#!/bin/sh\necho installing {version}\n".encode()
    r = await api.client.post(
        FIRMWARE,
        files={"file": (_filename(version), data)},
        data={"version": version, **fields},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def test_backup_of_an_openwrt_device(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "wrt-1", fake_connection(dev, "openwrt"))
        location = (tmp_path / "backups").as_uri() + "/"
        op = await run_op(
            api,
            headers,
            device_id,
            "backup_configuration",
            {"backup_location": location, "compression": True, "retention_days": 7},
        )
        assert op["status"] == "completed", op
        result = op["result"]
        assert result["method"] == "command" and result["compressed"] is True
        stored = Path(result["uri"].removeprefix("file://"))
        assert stored.is_file() and stored.name.endswith(".cfg.gz")
        export = gzip.decompress(stored.read_bytes()).decode()
        assert "package system" in export and "edge-1" in export
        r = await api.client.get(f"/api/v1/inventory_device/{device_id}/backups/", headers=headers)
        assert r.status_code == 200 and r.json()["count"] == 1
        backup_id = r.json()["results"][0]["id"]
        r = await api.client.get(
            f"/api/v1/inventory_device/{device_id}/backups/{backup_id}/content", headers=headers
        )
        assert r.status_code == 200 and r.content.decode() == export
        assert "uci export" in dev.commands


async def test_configuration_sync_of_a_linux_file_records_the_diff(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        conf = dev.root / "etc" / "device.conf"
        conf.write_text("hostname old\nntp 10.0.0.254\n")
        device_id = await register(api, headers, "box-1", fake_connection(dev, "linux"))
        r = await api.client.post(
            TEMPLATES,
            json={
                "name": "base",
                "format": "text",
                "content": "hostname {{ device.name }}\nntp {{ ntp }}\nsite {{ device.labels.get('site', 'none') }}\n",
            },
            headers=headers,
        )
        assert r.status_code == 201, r.text
        params = {"config_template": "base", "variables": {"ntp": "pool.ntp.org"}}
        op = await run_op(api, headers, device_id, "configuration_sync", params)
        assert op["status"] == "completed", op
        assert conf.read_text() == "hostname box-1\nntp pool.ntp.org\nsite none\n"
        result = op["result"]
        assert result["changed"] is True and result["pushed"] is True
        assert "-hostname old" in result["diff"] and "+hostname box-1" in result["diff"]
        assert "+ntp pool.ntp.org" in result["diff"]
        assert result["lines_added"] == 3 and result["lines_removed"] == 2
        # The same again: nothing to change, nothing pushed.
        again = await run_op(api, headers, device_id, "configuration_sync", params)
        assert again["status"] == "completed"
        assert again["result"]["changed"] is False and again["result"]["pushed"] is False
        # A template that names an undefined variable fails, saying which; nothing pushed.
        r = await api.client.put(
            f"{TEMPLATES}base/",
            json={"format": "text", "content": "x {{ missing }}\n"},
            headers=headers,
        )
        assert r.status_code == 200, r.text
        bad = await run_op(api, headers, device_id, "configuration_sync", params)
        assert bad["status"] == "failed" and bad["error"]["code"] == "template_error"
        assert "missing" in bad["error"]["message"]
        assert conf.read_text() == "hostname box-1\nntp pool.ntp.org\nsite none\n"
        gone = await run_op(
            api, headers, device_id, "configuration_sync", {"config_template": "nope"}
        )
        assert gone["error"]["code"] == "template_not_found"


async def test_configuration_sync_of_an_openwrt_device_through_uci(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        device_id = await register(api, headers, "wrt-2", fake_connection(dev, "openwrt"))
        before = (dev.root / "etc" / "config" / "system").read_text()
        content = (
            "package system\n\nconfig system\n\toption hostname '{{ device.name }}'\n"
            "\toption timezone '{{ tz }}'\n"
        )
        r = await api.client.post(
            TEMPLATES, json={"name": "wrt", "content": content}, headers=headers
        )
        assert r.status_code == 201, r.text
        op = await run_op(
            api,
            headers,
            device_id,
            "configuration_sync",
            {"config_template": "wrt", "variables": {"tz": "UTC"}},
        )
        assert op["status"] == "completed", op
        system = (dev.root / "etc" / "config" / "system").read_text()
        assert system != before and "wrt-2" in system and "timezone 'UTC'" in system
        assert "+\toption hostname 'wrt-2'" in op["result"]["diff"]
        assert "uci import" in dev.commands and "uci commit" in dev.commands


async def test_configuration_sync_of_an_ios_device_in_configuration_mode(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", kind="ios") as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(api, headers, "rtr-1", fake_connection(dev, "ios"))
        content = "! managed by headless-ops\nntp server {{ ntp }}\nno ntp server 10.0.0.254\n"
        r = await api.client.post(
            TEMPLATES, json={"name": "ios-ntp", "content": content}, headers=headers
        )
        assert r.status_code == 201, r.text
        op = await run_op(
            api,
            headers,
            device_id,
            "configuration_sync",
            {"config_template": "ios-ntp", "variables": {"ntp": "192.0.2.10"}},
        )
        assert op["status"] == "completed", op
        assert "ntp server 192.0.2.10" in dev.running_config
        assert "ntp server 10.0.0.254" not in dev.running_config
        diff = op["result"]["diff"]
        assert "+ntp server 192.0.2.10" in diff and "-ntp server 10.0.0.254" in diff
        assert "Current configuration" not in diff  # volatile lines are ignored
        assert dev.startup_config == dev.running_config  # `write memory` ran


async def test_firmware_update_of_an_openwrt_device_through_sysupgrade(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", reboot_s=0.3) as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(
            api, headers, "wrt-3", fake_connection(dev, "openwrt", product_class="WRT3200")
        )
        image = await _upload(api, headers, "23.05.2", product_class="WRT3200")
        await _upload(api, headers, "23.05.2")  # a generic image of that version: not chosen
        op = await run_op(
            api, headers, device_id, "firmware_update", {"firmware_version": "23.05.2"}
        )
        assert op["status"] == "completed", op
        result = op["result"]
        assert result["version_verified"] is True and result["rebooted"] is True
        assert result["previous_version"] == "1.0.0" and result["firmware_version"] == "23.05.2"
        assert result["image_id"] == image["id"] and result["sha256"] == image["sha256"]
        assert dev.version == "23.05.2" and dev.boots == 1
        assert any(c.startswith("sha256sum ") for c in dev.commands)
        r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=headers)
        assert r.json()["firmware_version"] == "23.05.2"
        # Already on it: skipped without touching the device.
        boots = dev.boots
        again = await run_op(
            api, headers, device_id, "firmware_update", {"firmware_version": "23.05.2"}
        )
        assert again["status"] == "completed" and again["result"]["skipped"] is True
        assert dev.boots == boots
        # A version the repository does not have: failed at once, saying so.
        missing = await run_op(
            api, headers, device_id, "firmware_update", {"firmware_version": "99.0"}
        )
        assert missing["status"] == "failed"
        assert missing["error"]["code"] == "firmware_not_found"
        assert missing["attempts"] == 1


async def test_firmware_update_of_an_ios_device_with_reload(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", kind="ios", reboot_s=0.3) as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(api, headers, "rtr-2", fake_connection(dev, "ios"))
        await _upload(api, headers, "15.9(3)M4")
        op = await run_op(
            api,
            headers,
            device_id,
            "firmware_update",
            {"firmware_version": "15.9(3)M4", "auto_reboot": True},
        )
        assert op["status"] == "completed", op
        assert op["result"]["version_verified"] is True
        assert dev.version == "15.9(3)M4" and dev.boots == 1
        assert dev.boot_image == _filename("15.9(3)M4")


async def test_firmware_update_without_reboot_leaves_it_pending(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", kind="ios") as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(api, headers, "rtr-3", fake_connection(dev, "ios"))
        await _upload(api, headers, "16.1")
        op = await run_op(
            api,
            headers,
            device_id,
            "firmware_update",
            {"firmware_version": "16.1", "auto_reboot": False},
        )
        assert op["status"] == "completed", op
        assert op["result"]["pending_reboot"] is True
        assert op["result"]["version_verified"] is False
        assert dev.boots == 0 and dev.boot_image == "fw-16.1.bin"


async def test_reboot_waits_for_the_device_to_come_back(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev", reboot_s=0.3) as dev,
        running(api.runtime.make_scheduler()),
    ):
        device_id = await register(api, headers, "box-2", fake_connection(dev, "linux"))
        op = await run_op(api, headers, device_id, "reboot")
        assert op["status"] == "completed", op
        assert op["result"]["rebooted"] is True and dev.boots == 1
        assert op["result"]["firmware_version"] == "1.0.0"


async def test_get_parameters_parses_show_commands(api: Api, tmp_path: Path) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with (
        running_device(tmp_path / "dev") as dev,
        running(api.runtime.make_scheduler()),
        running_device(tmp_path / "ios", kind="ios") as ios,
    ):
        box = await register(api, headers, "box-3", fake_connection(dev, "linux"))
        rtr = await register(api, headers, "rtr-4", fake_connection(ios, "ios"))
        op = await run_op(
            api,
            headers,
            box,
            "get_parameters",
            {"names": ["DeviceInfo.SoftwareVersion", "DeviceInfo."]},
        )
        assert op["status"] == "completed", op
        params = op["result"]["parameters"]
        assert params["DeviceInfo.SoftwareVersion"] == "1.0.0"
        assert set(params) >= {
            "DeviceInfo.HostName",
            "DeviceInfo.KernelVersion",
            "DeviceInfo.UpTime",
        }
        assert params["DeviceInfo.UpTime"].isdigit()
        op = await run_op(api, headers, rtr, "get_parameters", {"names": ["DeviceInfo."]})
        assert op["status"] == "completed", op
        assert op["result"]["parameters"]["DeviceInfo.SoftwareVersion"] == ios.version
        assert op["result"]["parameters"]["DeviceInfo.SystemImage"].startswith("flash:")
        unknown = await run_op(api, headers, box, "get_parameters", {"names": ["Foo.Bar"]})
        assert unknown["status"] == "failed"
        assert unknown["error"]["code"] == "unknown_parameter"
        assert "DeviceInfo.SoftwareVersion" in unknown["error"]["message"]


async def test_update_status_reports_online_with_version_or_offline_with_reason(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    async with running_device(tmp_path / "dev", version="2.4.1") as dev:
        device_id = await register(api, headers, "box-4", fake_connection(dev, "linux"))
        # update_status=true refreshes the devices of the listed operations.
        await api.client.post(
            OPS,
            json={
                "device_id": device_id,
                "operation_type": "reboot",
                "scheduled_at": "2099-01-01T00:00:00Z",
            },
            headers=headers,
        )
        r = await api.client.get(f"{OPS}?update_status=true", headers=headers)
        assert r.status_code == 200, r.text
        r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=headers)
        body = r.json()
        assert body["status"] == "online" and body["firmware_version"] == "2.4.1", body
    # The device is gone: offline, with the reason.
    r = await api.client.get(f"{OPS}?update_status=true", headers=headers)
    assert r.status_code == 200
    r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=headers)
    body = r.json()
    assert body["status"] == "offline", body
    assert "connection_refused" in (body["status_detail"] or "") or "unreachable" in (
        body["status_detail"] or ""
    ), body


async def test_an_unknown_profile_is_refused_when_the_device_is_created(api: Api) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    r = await api.client.post(
        "/api/v1/inventory_device/",
        json={
            "name": "odd",
            "protocol": "ssh",
            "connection": {"host": "10.0.0.9", "username": "a", "profile": "nonexistent"},
        },
        headers=headers,
    )
    assert r.status_code == 400, r.text
    errors = r.json()["errors"]
    assert errors[0]["field"] == "connection.profile"
    assert "linux" in errors[0]["message"]  # the known profiles are listed


async def test_a_profile_from_the_data_directory_is_used_without_code(
    api: Api, tmp_path: Path
) -> None:
    add_ssh_helper(api)
    headers = await api.auth()
    profiles = api.runtime.settings.profiles_dir
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / "appliance.yaml").write_text(
        "name: appliance\nextends: linux\n"
        "operations:\n  get_parameters:\n    parameters:\n"
        "      App.Greeting:\n        command: 'echo hello from {greeting_target}'\n"
        "vars:\n  greeting_target: the appliance\n"
    )
    async with running_device(tmp_path / "dev") as dev, running(api.runtime.make_scheduler()):
        conn = {**fake_connection(dev, "linux"), "profile": "appliance"}
        device_id = await register(api, headers, "app-1", conn)
        op = await run_op(api, headers, device_id, "get_parameters", {"names": ["App.Greeting"]})
    assert op["status"] == "completed", op
    assert op["result"]["parameters"] == {"App.Greeting": "hello from the appliance"}
    assert op["result"]["profile"] == "appliance"
