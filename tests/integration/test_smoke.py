"""The smallest end-to-end check: a device and an operation through the real server."""

from __future__ import annotations

from tests.conftest import Api


async def test_create_device_and_operation(api: Api) -> None:
    headers = await api.auth()
    r = await api.client.post(
        "/api/v1/inventory_device/",
        json={"id": "dev_1", "name": "gw-1", "protocol": "cwmp", "connection": {}},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    r = await api.client.post(
        "/api/v1/inventory_device_headless_operation/",
        json={"device_id": "dev_1", "operation_type": "reboot"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["status"] == "scheduled"
    op_id = r.json()["id"]
    r = await api.client.get(
        f"/api/v1/inventory_device_headless_operation/{op_id}/", headers=headers
    )
    assert r.status_code == 200
    assert r.json()["id"] == op_id
