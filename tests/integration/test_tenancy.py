"""Tenant isolation through the real server, on both engines.

Tenant A's token on tenant B's objects gets 404 — never 403, which would confirm that the
object exists — on every endpoint and method: list/read/cancel operations and create one on
B's device, on the by-id API and on its by-name twin, and list/read/update/delete devices.
B's objects never appear in A's lists, whatever the filters, and A's refused requests leave
B's objects untouched.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Api
from tests.support.api_helpers import BY_NAME, DEVICES, OPS, assert_error, make_device, make_op


@pytest.fixture
async def tenants(api: Api) -> dict[str, Any]:
    """Tenants A and B, each with one device and one scheduled operation on it."""
    a, b = await api.auth(tenant="tenant-a"), await api.auth(tenant="tenant-b")
    dev_a = await make_device(api, a, "a-gw", id="dev_a")
    dev_b = await make_device(api, b, "b-gw", id="dev_b", labels={"owner": "b"})
    op_a = await make_op(api, a, dev_a["id"], scheduled_at="2030-01-01T00:00:00Z")
    op_b = await make_op(api, b, dev_b["id"], scheduled_at="2030-01-01T00:00:00Z")
    return {"a": a, "b": b, "dev_b": dev_b, "op_a": op_a, "op_b": op_b}


async def test_another_tenants_operations_are_404_and_never_listed(
    api: Api, tenants: dict[str, Any]
) -> None:
    a, b, op_a, op_b = tenants["a"], tenants["b"], tenants["op_a"], tenants["op_b"]

    for path in (OPS, BY_NAME):
        r = await api.client.get(path, headers=a)
        assert r.status_code == 200
        assert [op["id"] for op in r.json()["results"]] == [op_a["id"]]
        assert r.json()["count"] == 1
        # Filters that name B's objects find nothing: no 404, no 403, no leak.
        for params in (
            {"id": op_b["id"]},
            {"device_id": "dev_b"},
            {"device_name": "b-gw"},
            {"id": op_b["id"], "update_status": "true"},
            {"operation_type": "reboot", "status": "scheduled", "device_id": "dev_b"},
        ):
            r = await api.client.get(path, params=params, headers=a)
            assert r.status_code == 200, r.text
            assert r.json()["count"] == 0 and r.json()["results"] == [], params

        assert_error(await api.client.get(f"{path}{op_b['id']}/", headers=a), 404)
        assert_error(await api.client.post(f"{path}{op_b['id']}/cancel/", headers=a), 404)

    # Creating on B's device, by id or by name, is "no such device".
    r = await api.client.post(
        OPS, json={"device_id": "dev_b", "operation_type": "reboot"}, headers=a
    )
    assert_error(r, 404)
    r = await api.client.post(
        BY_NAME, json={"device_name": "b-gw", "operation_type": "reboot"}, headers=a
    )
    assert_error(r, 404)
    # ... in every body form.
    r = await api.client.post(
        OPS, data={"data": '{"device_id": "dev_b", "operation_type": "reboot"}'}, headers=a
    )
    assert_error(r, 404)

    # B's operation is untouched and B still has exactly one.
    r = await api.client.get(f"{OPS}{op_b['id']}/", headers=b)
    assert r.status_code == 200 and r.json()["status"] == "scheduled"
    r = await api.client.get(OPS, headers=b)
    assert [op["id"] for op in r.json()["results"]] == [op_b["id"]]
    r = await api.client.get(OPS, headers=a)
    assert r.json()["count"] == 1


async def test_another_tenants_devices_are_404_and_never_listed(
    api: Api, tenants: dict[str, Any]
) -> None:
    a, b, dev_b = tenants["a"], tenants["b"], tenants["dev_b"]
    url = f"{DEVICES}dev_b/"

    r = await api.client.get(DEVICES, headers=a)
    assert [d["id"] for d in r.json()["results"]] == ["dev_a"]
    for params in ({"name": "b-gw"}, {"label": "owner=b"}, {"protocol": "cwmp"}):
        r = await api.client.get(DEVICES, params=params, headers=a)
        assert r.status_code == 200
        assert "dev_b" not in r.text and "b-gw" not in r.text, params

    assert_error(await api.client.get(url, headers=a), 404)
    assert_error(await api.client.patch(url, json={"name": "stolen"}, headers=a), 404)
    assert_error(await api.client.delete(url, headers=a), 404)
    # A's refusals changed nothing of B's.
    r = await api.client.get(url, headers=b)
    assert r.status_code == 200 and r.json() == dev_b

    # Ids and names are per tenant: A taking B's id and name is not a 409 (which would tell
    # A that they exist), and each tenant then reads its own device.
    mine = await make_device(api, a, "b-gw", id="dev_b", protocol="ssh")
    assert (await api.client.get(url, headers=a)).json() == mine
    assert (await api.client.get(url, headers=b)).json() == dev_b
    # And deleting A's copy leaves B's alone.
    assert (await api.client.delete(url, headers=a)).status_code == 204
    assert (await api.client.get(url, headers=b)).json() == dev_b
