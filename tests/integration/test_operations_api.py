"""The operations API through the real server, on both engines.

Covers POST in all three body forms (identical results, 201 + Location, ``scheduled``,
``scheduled_at`` defaults and UTC conversion), per-type parameter validation for every
operation type, request-level validation (read-only fields, zones, unknown device, a type the
device's protocol cannot perform), ``Idempotency-Key`` (replay, mismatch, per tenant,
concurrent), the list (pagination, limits, order, every filter, links), read and cancel, and
the by-name twin ``/inventory_device_name_headless_operation/``.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.conftest import Api
from tests.support.api_helpers import BY_NAME, OPS, assert_error, make_device, make_op

# A payload with every client field set, so the three body forms have something to agree on.
FULL_OP: dict[str, Any] = {
    "operation_type": "backup_configuration",
    "scheduled_at": "2030-01-16T02:00:00Z",
    "parameters": {
        "backup_location": "s3://backups/devices/",
        "compression": True,
        "retention_days": 30,
    },
    "priority": "high",
    "max_attempts": 5,
    "expires_at": "2030-01-17T02:00:00Z",
}

# Fields that differ between two creations of the same request.
PER_CREATION = {"id", "created_at", "updated_at"}


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _shows(read: dict[str, Any], created: dict[str, Any]) -> bool:
    """Whether a read of an operation shows every field its creation answered with
    (a single read may add detail, such as the operation's history)."""
    return {k: read.get(k) for k in created} == created


async def _count(api: Api, headers: dict[str, str], path: str = OPS, **params: Any) -> int:
    r = await api.client.get(path, params=params, headers=headers)
    assert r.status_code == 200, r.text
    count: int = r.json()["count"]
    return count


@pytest.mark.parametrize(("path", "key"), [(OPS, "device_id"), (BY_NAME, "device_name")])
async def test_three_body_forms_give_identical_results(api: Api, path: str, key: str) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-forms")
    op = {key: device[key.removeprefix("device_")], **FULL_OP}
    text = json.dumps(op)
    responses = [
        await api.client.post(path, json=op, headers=headers),
        await api.client.post(path, json={"data": text}, headers=headers),
        await api.client.post(path, data={"data": text}, headers=headers),
        await api.client.post(path, files={"data": (None, text)}, headers=headers),
        # A multipart field sent as a file part arrives as an upload, not a string.
        await api.client.post(
            path, files={"data": ("op.json", text.encode(), "application/json")}, headers=headers
        ),
    ]
    bodies = []
    for r in responses:
        assert r.status_code == 201, r.text
        bodies.append({k: v for k, v in r.json().items() if k not in PER_CREATION})
    assert all(b == bodies[0] for b in bodies), bodies
    assert bodies[0]["status"] == "scheduled"
    assert bodies[0]["device_id"] == device["id"]
    assert bodies[0]["device_name"] == "gw-forms"
    assert bodies[0]["parameters"] == FULL_OP["parameters"]
    assert bodies[0]["priority"] == "high"
    assert bodies[0]["max_attempts"] == 5
    assert bodies[0]["expires_at"] == "2030-01-17T02:00:00Z"
    assert len({r.json()["id"] for r in responses}) == len(responses)
    assert await _count(api, headers, device_id=device["id"]) == len(responses)


async def test_create_answers_201_with_location_and_utc_times(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-1")

    before = datetime.now(UTC)
    r = await api.client.post(
        OPS, json={"device_id": device["id"], "operation_type": "reboot"}, headers=headers
    )
    after = datetime.now(UTC)
    assert r.status_code == 201, r.text
    op = r.json()
    assert op["status"] == "scheduled"
    assert op["id"].startswith("op_")
    # Defaults the contract promises.
    assert op["priority"] == "normal"
    assert op["parameters"] == {}
    assert op["attempts"] == 0
    assert op["max_attempts"] == api.runtime.settings.default_max_attempts
    assert op["started_at"] is None and op["finished_at"] is None
    assert op["result"] is None and op["error"] is None
    # Omitted scheduled_at means now, rendered in UTC with Z.
    assert op["scheduled_at"].endswith("Z")
    assert before <= _ts(op["scheduled_at"]) <= after
    assert op["scheduled_at"] == op["created_at"] == op["updated_at"]

    location = r.headers["location"]
    assert location == f"{api.base_url}{OPS}{op['id']}/"
    got = await api.client.get(location, headers=headers)
    assert got.status_code == 200
    assert _shows(got.json(), op)

    # An offset is converted to UTC, for scheduled_at and expires_at alike.
    r = await api.client.post(
        OPS,
        json={
            "device_id": device["id"],
            "operation_type": "reboot",
            "scheduled_at": "2030-01-16T04:00:00+02:00",
            "expires_at": "2030-01-15T22:30:00-05:00",
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["scheduled_at"] == "2030-01-16T02:00:00Z"
    assert r.json()["expires_at"] == "2030-01-16T03:30:00Z"


# (operation_type, parameters that are wrong, the field the 400 must name)
INVALID_PARAMETERS: list[tuple[str, Any, str]] = [
    ("firmware_update", {}, "parameters.firmware_version"),
    ("firmware_update", {"firmware_version": ""}, "parameters.firmware_version"),
    (
        "firmware_update",
        {"firmware_version": "2.1", "auto_reboot": "yes"},
        "parameters.auto_reboot",
    ),
    ("firmware_update", {"firmware_version": "2.1", "reboot": True}, "parameters.reboot"),
    ("configuration_sync", {}, "parameters.config_template"),
    ("configuration_sync", {"config_template": "../etc/passwd"}, "parameters.config_template"),
    ("configuration_sync", {"config_template": "t", "variables": []}, "parameters.variables"),
    ("backup_configuration", {}, "parameters.backup_location"),
    ("backup_configuration", {"backup_location": "http://x/y"}, "parameters.backup_location"),
    ("backup_configuration", {"backup_location": "file:///a/../b"}, "parameters.backup_location"),
    (
        "backup_configuration",
        {"backup_location": "s3://b/", "retention_days": 0},
        "parameters.retention_days",
    ),
    (
        "backup_configuration",
        {"backup_location": "s3://b/", "retention_days": "30"},
        "parameters.retention_days",
    ),
    (
        "backup_configuration",
        {"backup_location": "s3://b/", "compression": 1},
        "parameters.compression",
    ),
    ("reboot", {"delay": 5}, "parameters.delay"),
    ("factory_reset", {"confirm": True}, "parameters.confirm"),
    ("get_parameters", {}, "parameters.names"),
    ("get_parameters", {"names": []}, "parameters.names"),
    ("get_parameters", {"names": "Device."}, "parameters.names"),
    ("get_parameters", {"names": ["Device..Info"]}, "parameters.names"),
    ("set_parameters", {}, "parameters.values"),
    (
        "set_parameters",
        {"values": [{"name": "Device.X", "value": "abc", "type": "integer"}]},
        "parameters.values.0",
    ),
    (
        "set_parameters",
        {"values": [{"name": "Device.X", "value": 1, "type": "real"}]},
        "parameters.values.0.type",
    ),
    ("add_object", {}, "parameters.object_name"),
    ("add_object", {"object_name": "Device.IP.Interface"}, "parameters.object_name"),
    ("delete_object", {"object_name": "Device.IP.Interface."}, "parameters.object_name"),
    # Aliases are validated as their canonical type.
    ("get", {"names": []}, "parameters.names"),
    ("del.obj", {"object_name": "Device.IP."}, "parameters.object_name"),
    # Parameters themselves must be an object.
    ("reboot", [], "parameters"),
]

INTERVAL = {
    "name": "Device.ManagementServer.PeriodicInformInterval",
    "value": 300,
    "type": "unsignedInt",
}
# One valid request per type, and the parameters stored (defaults filled in).
VALID_PARAMETERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "firmware_update": (
        {"firmware_version": "2.1.3"},
        {"firmware_version": "2.1.3", "auto_reboot": True, "force": False},
    ),
    "configuration_sync": (
        {"config_template": "default_template"},
        {"config_template": "default_template", "variables": {}},
    ),
    "backup_configuration": (
        {"backup_location": "file:///var/backups/"},
        {"backup_location": "file:///var/backups/", "compression": False},
    ),
    "reboot": ({}, {}),
    "factory_reset": ({}, {}),
    "get_parameters": ({"names": ["Device.DeviceInfo."]}, {"names": ["Device.DeviceInfo."]}),
    "set_parameters": ({"values": [INTERVAL]}, {"values": [INTERVAL]}),
    "add_object": (
        {"object_name": "Device.IP.Interface."},
        {"object_name": "Device.IP.Interface."},
    ),
    "delete_object": (
        {"object_name": "Device.IP.Interface.3."},
        {"object_name": "Device.IP.Interface.3."},
    ),
}


async def test_parameters_are_validated_per_type(api: Api) -> None:
    headers = await api.auth()
    # cwmp can perform every type, so only the parameters decide.
    device = await make_device(api, headers, "gw-params")
    for op_type, parameters, field in INVALID_PARAMETERS:
        r = await api.client.post(
            OPS,
            json={"device_id": device["id"], "operation_type": op_type, "parameters": parameters},
            headers=headers,
        )
        assert_error(r, 400, {field})
    assert await _count(api, headers) == 0, "a refused request must create nothing"

    for op_type, (parameters, stored) in VALID_PARAMETERS.items():
        op = await make_op(api, headers, device["id"], op_type, parameters=parameters)
        assert op["operation_type"] == op_type
        assert op["parameters"] == stored, op_type


async def test_request_fields_are_validated(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-fields")
    dev = device["id"]
    cases: list[tuple[dict[str, Any], set[str]]] = [
        # Clients never set server-owned fields; they are refused, not ignored.
        ({"device_id": dev, "operation_type": "reboot", "status": "completed"}, {"status"}),
        ({"device_id": dev, "operation_type": "reboot", "id": "op_mine"}, {"id"}),
        (
            {"device_id": dev, "operation_type": "reboot", "attempts": 0, "tenant": "other"},
            {"attempts", "tenant"},
        ),
        ({"device_id": dev, "operation_type": "teleport"}, {"operation_type"}),
        ({"device_id": dev}, {"operation_type"}),
        ({"operation_type": "reboot"}, {"device_id"}),
        ({"device_id": dev, "operation_type": "reboot", "colour": "red"}, {"colour"}),
        ({"device_id": dev, "operation_type": "reboot", "priority": "urgent"}, {"priority"}),
        ({"device_id": dev, "operation_type": "reboot", "max_attempts": 0}, {"max_attempts"}),
        ({"device_id": 7, "operation_type": "reboot"}, {"device_id"}),
        # A timestamp without a zone is ambiguous: refused.
        (
            {"device_id": dev, "operation_type": "reboot", "scheduled_at": "2030-01-16T02:00:00"},
            {"scheduled_at"},
        ),
        (
            {"device_id": dev, "operation_type": "reboot", "scheduled_at": "tomorrow"},
            {"scheduled_at"},
        ),
        (
            {
                "device_id": dev,
                "operation_type": "reboot",
                "scheduled_at": "2030-01-16T02:00:00Z",
                "expires_at": "2030-01-16T01:00:00Z",
            },
            {"expires_at"},
        ),
    ]
    for body, fields in cases:
        assert_error(await api.client.post(OPS, json=body, headers=headers), 400, fields)
    # The escaped-string form reports the same fields.
    r = await api.client.post(
        OPS,
        json={"data": json.dumps({"device_id": dev, "operation_type": "reboot", "status": "x"})},
        headers=headers,
    )
    assert_error(r, 400, {"status"})
    assert await _count(api, headers) == 0


async def test_unknown_device_404_and_a_type_its_protocol_cannot_perform_400(api: Api) -> None:
    headers = await api.auth()
    r = await api.client.post(
        OPS, json={"device_id": "dev_nope", "operation_type": "reboot"}, headers=headers
    )
    assert "dev_nope" in assert_error(r, 404)["detail"]

    device = await make_device(api, headers, "box-1", protocol="ssh")
    for op_type, parameters in [
        ("factory_reset", {}),
        ("set_parameters", VALID_PARAMETERS["set_parameters"][0]),
        ("add.obj", {"object_name": "Device.IP.Interface."}),
    ]:
        r = await api.client.post(
            OPS,
            json={"device_id": device["id"], "operation_type": op_type, "parameters": parameters},
            headers=headers,
        )
        body = assert_error(r, 400, {"operation_type"})
        assert "ssh" in body["detail"], body
    # What ssh can do is accepted on the same device.
    await make_op(api, headers, device["id"], "reboot")


async def test_idempotency_key_replays_the_original_or_refuses_another_body(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-idem")
    body = {"device_id": device["id"], **FULL_OP}
    first = await api.client.post(OPS, json=body, headers={**headers, "Idempotency-Key": "k-1"})
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    assert await _count(api, headers) == 1

    # The same request in another body form is the same request.
    for again in (
        await api.client.post(OPS, json=body, headers={**headers, "Idempotency-Key": "k-1"}),
        await api.client.post(
            OPS, data={"data": json.dumps(body)}, headers={**headers, "Idempotency-Key": "k-1"}
        ),
    ):
        assert again.status_code == 201, again.text
        assert again.headers["idempotent-replayed"] == "true"
        assert again.json() == first.json()
        assert again.headers["location"] == first.headers["location"]
    assert await _count(api, headers) == 1

    # Another key is another operation.
    other = await api.client.post(OPS, json=body, headers={**headers, "Idempotency-Key": "k-2"})
    assert other.status_code == 201
    assert other.json()["id"] != first.json()["id"]
    assert await _count(api, headers) == 2

    # The same key with another body is refused, and creates nothing.
    r = await api.client.post(
        OPS, json={**body, "priority": "low"}, headers={**headers, "Idempotency-Key": "k-1"}
    )
    assert "op_" in assert_error(r, 422, {"Idempotency-Key"})["errors"][0]["message"]
    assert await _count(api, headers) == 2


async def test_idempotency_keys_are_per_tenant(api: Api) -> None:
    a, b = await api.auth(tenant="a"), await api.auth(tenant="b")
    # Device ids are per tenant too: both tenants may hold dev_shared.
    for headers in (a, b):
        await make_device(api, headers, "gw", id="dev_shared")
    body = {"device_id": "dev_shared", "operation_type": "reboot"}
    ra = await api.client.post(OPS, json=body, headers={**a, "Idempotency-Key": "same"})
    rb = await api.client.post(OPS, json=body, headers={**b, "Idempotency-Key": "same"})
    assert ra.status_code == rb.status_code == 201
    assert "idempotent-replayed" not in rb.headers
    assert ra.json()["id"] != rb.json()["id"]
    assert await _count(api, a) == 1
    assert await _count(api, b) == 1


async def test_concurrent_requests_with_one_key_create_one_operation(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-race")
    body = {"device_id": device["id"], "operation_type": "reboot"}
    responses = await asyncio.gather(
        *(
            api.client.post(OPS, json=body, headers={**headers, "Idempotency-Key": "race"})
            for _ in range(10)
        )
    )
    assert [r.status_code for r in responses] == [201] * 10, [r.text for r in responses]
    assert len({r.json()["id"] for r in responses}) == 1
    originals = [r for r in responses if "idempotent-replayed" not in r.headers]
    assert len(originals) == 1, "exactly one request created the operation"
    assert await _count(api, headers) == 1


async def test_list_pagination_limits_and_order(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-page")
    # Created one after another, so newest first is the reverse of this list.
    created = [(await make_op(api, headers, device["id"]))["id"] for _ in range(51)]
    newest_first = created[::-1]

    r = await api.client.get(OPS, headers=headers)
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 51
    assert [op["id"] for op in page["results"]] == newest_first[:50], "default limit is 50"
    assert page["previous"] is None
    assert page["next"] is not None

    # Following the links walks the pages.
    r = await api.client.get(page["next"], headers=headers)
    second = r.json()
    assert second["count"] == 51
    assert [op["id"] for op in second["results"]] == newest_first[50:]
    assert second["next"] is None
    back = (await api.client.get(second["previous"], headers=headers)).json()
    assert [op["id"] for op in back["results"]] == newest_first[:50]

    r = await api.client.get(OPS, params={"limit": 2, "offset": 49}, headers=headers)
    middle = r.json()
    assert [op["id"] for op in middle["results"]] == newest_first[49:]
    assert middle["next"] is None
    prev = (await api.client.get(middle["previous"], headers=headers)).json()
    assert [op["id"] for op in prev["results"]] == newest_first[47:49]

    r = await api.client.get(OPS, params={"limit": 1000}, headers=headers)
    assert len(r.json()["results"]) == 51
    r = await api.client.get(OPS, params={"offset": 100}, headers=headers)
    assert r.json()["count"] == 51 and r.json()["results"] == []

    assert_error(await api.client.get(OPS, params={"limit": 1001}, headers=headers), 400, {"limit"})
    assert_error(await api.client.get(OPS, params={"limit": 0}, headers=headers), 400, {"limit"})
    assert_error(await api.client.get(OPS, params={"offset": -1}, headers=headers), 400, {"offset"})
    assert_error(await api.client.get(OPS, params={"limit": "x"}, headers=headers), 400, {"limit"})


async def test_list_filters(api: Api) -> None:
    headers = await api.auth()
    gw = await make_device(api, headers, "gw-a")
    other = await make_device(api, headers, "gw-b")
    reboot = await make_op(api, headers, gw["id"], "reboot")
    get = await make_op(api, headers, gw["id"], "get", parameters={"names": ["Device."]})
    later = await make_op(
        api,
        headers,
        gw["id"],
        "firmware_update",
        parameters={"firmware_version": "3.0"},
        scheduled_at="2030-01-16T02:00:00Z",
    )
    elsewhere = await make_op(api, headers, other["id"], "reboot")
    r = await api.client.post(f"{OPS}{reboot['id']}/cancel/", headers=headers)
    assert r.status_code == 200

    async def ids(**params: Any) -> list[str]:
        r = await api.client.get(OPS, params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["count"] == len(body["results"])
        return [op["id"] for op in body["results"]]

    assert await ids(id=get["id"]) == [get["id"]]
    # An unknown id matches nothing; it is not a 404.
    r = await api.client.get(OPS, params={"id": "op_unknown"}, headers=headers)
    assert r.status_code == 200
    assert r.json() == {"count": 0, "next": None, "previous": None, "results": []}

    assert await ids(device_id=other["id"]) == [elsewhere["id"]]
    assert await ids(device_id="dev_unknown") == []
    assert await ids(device_name="gw-b") == [elsewhere["id"]]
    assert await ids(status="cancelled") == [reboot["id"]]
    assert await ids(status="scheduled") == [elsewhere["id"], later["id"], get["id"]]
    assert await ids(status="scheduled", device_id=gw["id"]) == [later["id"], get["id"]]
    # Aliases filter as their canonical type, and the stored type is canonical.
    assert get["operation_type"] == "get_parameters"
    assert await ids(operation_type="get") == [get["id"]]
    assert await ids(operation_type="get_parameters") == [get["id"]]
    assert await ids(operation_type="reboot") == [elsewhere["id"], reboot["id"]]

    assert await ids(scheduled_after="2029-01-01T00:00:00Z") == [later["id"]]
    assert await ids(scheduled_before="2029-01-01T00:00:00Z") == [
        elsewhere["id"],
        get["id"],
        reboot["id"],
    ]
    # Bounds are compared in UTC: after is inclusive, before exclusive.
    assert await ids(scheduled_after="2030-01-16T04:00:00+02:00") == [later["id"]]
    assert await ids(scheduled_before="2030-01-16T04:00:00+02:00", device_id=gw["id"]) == [
        get["id"],
        reboot["id"],
    ]

    for params, field in [
        ({"scheduled_after": "2029-01-01T00:00:00"}, "scheduled_after"),
        ({"scheduled_before": "2029-01-01T00:00:00"}, "scheduled_before"),
        ({"scheduled_after": "soon"}, "scheduled_after"),
        ({"status": "sleeping"}, "status"),
        ({"operation_type": "teleport"}, "operation_type"),
        ({"update_status": "perhaps"}, "update_status"),
    ]:
        assert_error(await api.client.get(OPS, params=params, headers=headers), 400, {field})


async def test_read_and_cancel(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-cancel")
    op = await make_op(api, headers, device["id"], scheduled_at="2030-01-16T02:00:00Z")

    r = await api.client.get(f"{OPS}{op['id']}/", headers=headers)
    assert r.status_code == 200
    assert _shows(r.json(), op)

    r = await api.client.post(f"{OPS}{op['id']}/cancel/", headers=headers)
    assert r.status_code == 200, r.text
    cancelled = r.json()
    # A scheduled operation is cancelled at once, not merely flagged.
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None
    assert cancelled["error"]["code"] == "cancelled"
    r = await api.client.get(f"{OPS}{op['id']}/", headers=headers)
    assert r.json()["status"] == "cancelled"

    body = assert_error(await api.client.post(f"{OPS}{op['id']}/cancel/", headers=headers), 409)
    assert "cancelled" in body["detail"]
    assert_error(await api.client.get(f"{OPS}op_unknown/", headers=headers), 404)
    assert_error(await api.client.post(f"{OPS}op_unknown/cancel/", headers=headers), 404)


async def test_by_name_twin(api: Api) -> None:
    headers = await api.auth()
    gw = await make_device(api, headers, "gw-0001")
    box = await make_device(api, headers, "box-0001", protocol="ssh")
    await make_op(api, headers, box["id"])

    r = await api.client.post(
        BY_NAME, json={"device_name": "gw-0001", "operation_type": "reboot"}, headers=headers
    )
    assert r.status_code == 201, r.text
    op = r.json()
    assert op["device_id"] == gw["id"]
    assert op["device_name"] == "gw-0001"
    assert op["status"] == "scheduled"
    assert r.headers["location"] == f"{api.base_url}{BY_NAME}{op['id']}/"
    assert _shows((await api.client.get(r.headers["location"], headers=headers)).json(), op)
    # The same operation is visible through the by-id endpoint.
    assert _shows((await api.client.get(f"{OPS}{op['id']}/", headers=headers)).json(), op)

    # The device is named by name here; an id is refused, not silently used.
    for body, field in [
        ({"device_id": gw["id"], "operation_type": "reboot"}, "device_id"),
        (
            {"device_name": "gw-0001", "device_id": gw["id"], "operation_type": "reboot"},
            "device_id",
        ),
        ({"operation_type": "reboot"}, "device_name"),
        ({"device_name": "gw-0001", "operation_type": "reboot", "status": "done"}, "status"),
        (
            {"device_name": "gw-0001", "operation_type": "set_parameters", "parameters": {}},
            "parameters.values",
        ),
    ]:
        assert_error(await api.client.post(BY_NAME, json=body, headers=headers), 400, {field})
    # ... and the by-id endpoint refuses a name.
    r = await api.client.post(
        OPS, json={"device_name": "gw-0001", "operation_type": "reboot"}, headers=headers
    )
    assert_error(r, 400, {"device_name"})

    r = await api.client.post(
        BY_NAME, json={"device_name": "gw-9999", "operation_type": "reboot"}, headers=headers
    )
    assert "gw-9999" in assert_error(r, 404)["detail"]
    r = await api.client.post(
        BY_NAME,
        json={"device_name": "box-0001", "operation_type": "factory_reset"},
        headers=headers,
    )
    assert "ssh" in assert_error(r, 400, {"operation_type"})["detail"]

    # Idempotency works the same way here.
    key = {**headers, "Idempotency-Key": "by-name"}
    body = {"device_name": "gw-0001", "operation_type": "reboot", "priority": "low"}
    first = await api.client.post(BY_NAME, json=body, headers=key)
    again = await api.client.post(BY_NAME, json=body, headers=key)
    assert first.status_code == again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    r = await api.client.post(BY_NAME, json={**body, "priority": "high"}, headers=key)
    assert_error(r, 422)

    # List, filtered by name; an unknown name matches nothing.
    r = await api.client.get(BY_NAME, params={"device_name": "gw-0001"}, headers=headers)
    assert r.status_code == 200
    assert [o["id"] for o in r.json()["results"]] == [first.json()["id"], op["id"]]
    r = await api.client.get(BY_NAME, params={"device_name": "gw-9999"}, headers=headers)
    assert r.json()["count"] == 0 and r.json()["results"] == []
    assert await _count(api, headers, BY_NAME) == 3

    # Read and cancel through the twin.
    r = await api.client.post(f"{BY_NAME}{op['id']}/cancel/", headers=headers)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert_error(await api.client.post(f"{BY_NAME}{op['id']}/cancel/", headers=headers), 409)
    assert_error(await api.client.get(f"{BY_NAME}op_unknown/", headers=headers), 404)
    assert_error(await api.client.post(f"{BY_NAME}op_unknown/cancel/", headers=headers), 404)
