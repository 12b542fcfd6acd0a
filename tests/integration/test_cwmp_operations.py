"""Every operation type end to end on TR-069, on both engines: API POST → scheduler →
connection request → CWMP session with a simulated CPE over real HTTP → operation
``completed`` with its result, and the CPE's model changed accordingly."""

from __future__ import annotations

from tests.conftest import Api
from tests.support.cwmp_env import acs_env
from tests.support.ssh_ops import run_op


async def test_get_parameters_returns_values_with_types(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("GPV0001")
        device_id = await env.device_id(cpe)
        op = await run_op(
            api,
            env.headers,
            device_id,
            "get_parameters",
            {
                "names": [
                    "InternetGatewayDevice.DeviceInfo.SoftwareVersion",
                    "InternetGatewayDevice.Time.",
                ]
            },
            timeout=30,
        )
    assert op["status"] == "completed", op
    params = op["result"]["parameters"]
    assert (
        params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"]["value"] == cpe.software_version
    )
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"]["type"] == "string"
    assert any(name.startswith("InternetGatewayDevice.Time.") for name in params)


IGD = "InternetGatewayDevice."
FIRMWARE = "/api/v1/firmware/"
TEMPLATES = "/api/v1/config_template/"


async def _image(
    api: Api,
    headers: dict[str, str],
    version: str,
    content_version: str | None = None,
    product_class: str = "BM632w",
) -> None:
    data = f"VERSION={content_version or version}\nsimulated image\n".encode()
    r = await api.client.post(
        FIRMWARE,
        files={"file": (f"fw-{version}.bin", data)},
        data={"version": version, "product_class": product_class},
        headers=headers,
    )
    assert r.status_code == 201, r.text


async def test_set_parameters_changes_the_model_with_a_parameter_key(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("SPV0001")
        device_id = await env.device_id(cpe)
        values = [
            {"name": f"{IGD}Time.NTPServer1", "value": "pool.ntp.org", "type": "string"},
            {
                "name": f"{IGD}ManagementServer.PeriodicInformInterval",
                "value": 600,
                "type": "unsignedInt",
            },
        ]
        op = await run_op(
            api, env.headers, device_id, "set_parameters", {"values": values}, timeout=30
        )
        assert op["status"] == "completed", op
        assert op["result"]["status"] == 0 and op["result"]["reboot_required"] is False
        assert cpe.model.value(f"{IGD}Time.NTPServer1") == "pool.ntp.org"
        assert cpe.model.value(f"{IGD}ManagementServer.PeriodicInformInterval") == "600"
        assert (
            cpe.model.value(f"{IGD}ManagementServer.ParameterKey") == op["result"]["parameter_key"]
        )
        # A non-writable parameter: the CPE's fault, with the per-parameter faults, permanent.
        bad = [{"name": f"{IGD}DeviceInfo.SerialNumber", "value": "X", "type": "string"}]
        op = await run_op(
            api, env.headers, device_id, "set_parameters", {"values": bad}, timeout=30
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "cwmp_fault_9003"
        assert f"{IGD}DeviceInfo.SerialNumber: 9008" in op["error"]["message"]
        assert op["attempts"] == 1


async def test_add_and_delete_object_on_a_tr181_device(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("OBJ0001", model="tr181")
        device_id = await env.device_id(cpe)
        op = await run_op(
            api,
            env.headers,
            device_id,
            "add_object",
            {"object_name": "Device.NAT.PortMapping."},
            timeout=30,
        )
        assert op["status"] == "completed", op
        number = op["result"]["instance_number"]
        assert number >= 1 and op["result"]["object"] == f"Device.NAT.PortMapping.{number}."
        assert cpe.model.value(f"Device.NAT.PortMapping.{number}.Enable") is not None
        op = await run_op(
            api,
            env.headers,
            device_id,
            "delete_object",
            {"object_name": f"Device.NAT.PortMapping.{number}."},
            timeout=30,
        )
        assert op["status"] == "completed", op
        assert cpe.model.value(f"Device.NAT.PortMapping.{number}.Enable") is None
        # Deleting it again: the CPE says there is no such object.
        op = await run_op(
            api,
            env.headers,
            device_id,
            "delete_object",
            {"object_name": f"Device.NAT.PortMapping.{number}."},
            max_attempts=1,
            timeout=30,
        )
        assert op["status"] == "failed" and op["error"]["code"] == "cwmp_fault_9005", op


async def test_reboot_completes_when_the_cpe_comes_back(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("RBT0001")
        device_id = await env.device_id(cpe)
        op = await run_op(api, env.headers, device_id, "reboot", timeout=30)
        assert op["status"] == "completed", op
        assert op["result"]["rebooted"] is True
        assert any(e.startswith("M Reboot") for e in op["result"]["events"])
        assert cpe.boots == 1


async def test_factory_reset_completes_on_bootstrap(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("FRS0001")
        device_id = await env.device_id(cpe)
        op = await run_op(
            api,
            env.headers,
            device_id,
            "set_parameters",
            {"values": [{"name": f"{IGD}Time.NTPServer1", "value": "changed", "type": "string"}]},
            timeout=30,
        )
        assert cpe.model.value(f"{IGD}Time.NTPServer1") == "changed"
        op = await run_op(api, env.headers, device_id, "factory_reset", timeout=30)
        assert op["status"] == "completed", op
        assert op["result"]["factory_reset"] is True and op["result"]["bootstrap"] is True
        assert cpe.model.value(f"{IGD}Time.NTPServer1") != "changed"  # back to factory values


async def test_firmware_update_downloads_reboots_and_checks_the_version(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("FWU0001", software_version="1.0.0")
        device_id = await env.device_id(cpe)
        await _image(api, env.headers, "3.0.0")
        op = await run_op(
            api,
            env.headers,
            device_id,
            "firmware_update",
            {"firmware_version": "3.0.0"},
            timeout=30,
        )
        assert op["status"] == "completed", op
        assert op["result"]["version_verified"] is True
        assert op["result"]["previous_version"] == "1.0.0"
        assert cpe.software_version == "3.0.0" and cpe.boots == 1
        r = await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=env.headers)
        assert r.json()["firmware_version"] == "3.0.0"
        # Already on it: completed at once, skipped, nothing downloaded.
        rpcs = len(cpe.rpcs)
        op = await run_op(
            api,
            env.headers,
            device_id,
            "firmware_update",
            {"firmware_version": "3.0.0"},
            timeout=30,
        )
        assert op["status"] == "completed" and op["result"]["skipped"] is True, op
        assert "Download" not in cpe.rpcs[rpcs:]


async def test_firmware_that_reports_another_version_fails_as_mismatch(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("FWM0001", software_version="1.0.0")
        device_id = await env.device_id(cpe)
        await _image(api, env.headers, "4.0.0", content_version="4.0.0-rc1")
        op = await run_op(
            api,
            env.headers,
            device_id,
            "firmware_update",
            {"firmware_version": "4.0.0"},
            timeout=30,
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "version_mismatch"
        assert "4.0.0-rc1" in op["error"]["message"]


async def test_a_failed_transfer_is_the_operations_error(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("FWF0001", software_version="1.0.0")
        device_id = await env.device_id(cpe)
        await _image(api, env.headers, "5.0.0")
        cpe.config.faults.download_fault = 9019  # file authentication failure: permanent
        op = await run_op(
            api,
            env.headers,
            device_id,
            "firmware_update",
            {"firmware_version": "5.0.0"},
            max_attempts=3,
            timeout=30,
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "cwmp_fault_9019" and op["attempts"] == 1


async def test_configuration_sync_applies_a_parameters_template(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("CFG0001", model="tr181")
        device_id = await env.device_id(cpe)
        r = await api.client.post(
            TEMPLATES,
            json={
                "name": "gw-base",
                "format": "parameters",
                "parameters": {
                    "Device.Time.NTPServer1": "{{ ntp }}",
                    "Device.ManagementServer.PeriodicInformInterval": {
                        "value": 900,
                        "type": "unsignedInt",
                    },
                    "Device.NAT.PortMapping.{i}.ExternalPort": {
                        "value": 8080,
                        "type": "unsignedInt",
                    },
                    "Device.NAT.PortMapping.{i}.Description": "{{ device.name }}",
                },
            },
            headers=env.headers,
        )
        assert r.status_code == 201, r.text
        op = await run_op(
            api,
            env.headers,
            device_id,
            "configuration_sync",
            {"config_template": "gw-base", "variables": {"ntp": "10.1.1.1"}},
            timeout=30,
        )
        assert op["status"] == "completed", op
        result = op["result"]
        added = result["added_objects"]
        assert len(added) == 1 and added[0].startswith("Device.NAT.PortMapping.")
        changed = {c["name"]: c for c in result["changed"]}
        assert changed["Device.Time.NTPServer1"]["after"] == "10.1.1.1"
        assert changed["Device.Time.NTPServer1"]["before"] != "10.1.1.1"
        assert cpe.model.value("Device.Time.NTPServer1") == "10.1.1.1"
        assert cpe.model.value(f"{added[0]}ExternalPort") == "8080"
        # The same again: only the new instance's values change; the rest is already so.
        op = await run_op(
            api,
            env.headers,
            device_id,
            "configuration_sync",
            {"config_template": "gw-base", "variables": {"ntp": "10.1.1.1"}},
            timeout=30,
        )
        assert op["status"] == "completed", op
        names = {c["name"] for c in op["result"]["changed"]}
        assert "Device.Time.NTPServer1" not in names


async def test_backup_by_upload_and_by_parameter_dump(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("BAK0001")
        device_id = await env.device_id(cpe)
        location = (api.runtime.settings.data_dir / "backups").as_uri() + "/"
        params = {"backup_location": location, "compression": True}
        op = await run_op(api, env.headers, device_id, "backup_configuration", params, timeout=30)
        assert op["status"] == "completed", op
        assert op["result"]["method"] == "upload" and op["result"]["compressed"] is True
        r = await api.client.get(
            f"/api/v1/inventory_device/{device_id}/backups/{op['result']['backup_id']}/content",
            headers=env.headers,
        )
        assert r.status_code == 200 and f"{IGD}DeviceInfo.SerialNumber" in r.text
        # A CPE that does not implement Upload: a dump of every parameter instead.
        cpe.config.faults.fault_rpcs["Upload"] = 9000
        op = await run_op(api, env.headers, device_id, "backup_configuration", params, timeout=30)
        assert op["status"] == "completed", op
        assert op["result"]["method"] == "parameter_dump"
        assert op["result"]["upload_fault"].startswith("9000")
        r = await api.client.get(
            f"/api/v1/inventory_device/{device_id}/backups/", headers=env.headers
        )
        assert r.json()["count"] == 2


async def test_update_status_sends_a_connection_request_and_reads_the_inform(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("STS0001", software_version="7.1")
        device_id = await env.device_id(cpe)
        await api.client.post(
            "/api/v1/inventory_device_headless_operation/",
            json={
                "device_id": device_id,
                "operation_type": "reboot",
                "scheduled_at": "2099-01-01T00:00:00Z",
            },
            headers=env.headers,
        )
        sessions = cpe.sessions
        r = await api.client.get(
            "/api/v1/inventory_device_headless_operation/?update_status=true", headers=env.headers
        )
        assert r.status_code == 200
        assert cpe.sessions > sessions  # the CPE really was asked to connect
        body = (
            await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=env.headers)
        ).json()
        assert body["status"] == "online" and body["firmware_version"] == "7.1", body
        await cpe.close()
        r = await api.client.get(
            "/api/v1/inventory_device_headless_operation/?update_status=true", headers=env.headers
        )
        body = (
            await api.client.get(f"/api/v1/inventory_device/{device_id}/", headers=env.headers)
        ).json()
        assert body["status"] == "offline", body
        assert "connection request" in (body["status_detail"] or ""), body


async def test_each_contract_value_type_is_sent_with_its_xsd_type(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("TYP0001", model="tr181")
        device_id = await env.device_id(cpe)
        values = [
            {"name": "Device.Ethernet.Interface.1.MaxBitRate", "value": 100, "type": "integer"},
            {
                "name": "Device.ManagementServer.PeriodicInformInterval",
                "value": 60,
                "type": "unsignedInt",
            },
            {
                "name": "Device.ManagementServer.PeriodicInformEnable",
                "value": False,
                "type": "boolean",
            },
        ]
        before = list(cpe.rpcs)
        op = await run_op(
            api, env.headers, device_id, "set_parameters", {"values": values}, timeout=30
        )
        assert op["status"] == "completed", op
        # Right the first time: the CPE (strict about types) refused nothing to re-type.
        assert cpe.rpcs[len(before) :] == ["SetParameterValues"]
        assert cpe.model.value("Device.Ethernet.Interface.1.MaxBitRate") == "100"
        assert cpe.model.value("Device.ManagementServer.PeriodicInformEnable") == "false"
