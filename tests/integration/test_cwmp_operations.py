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
            {"names": ["InternetGatewayDevice.DeviceInfo.SoftwareVersion", "InternetGatewayDevice.Time."]},
            timeout=30,
        )
    assert op["status"] == "completed", op
    params = op["result"]["parameters"]
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"]["value"] == cpe.software_version
    assert params["InternetGatewayDevice.DeviceInfo.SoftwareVersion"]["type"] == "string"
    assert any(name.startswith("InternetGatewayDevice.Time.") for name in params)
