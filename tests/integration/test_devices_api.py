"""The device inventory ``/api/v1/inventory_device/`` through the real server, on both engines.

Covers create (client-supplied and generated ids, validation), 409 on a taken id or name,
read, PATCH (rename, labels, connection merge, secret removal through ``null``), DELETE
(204; 409 while an operation is active, 204 once it is cancelled), the list with its filters
and pagination, and secrets: never in any response, only their names in ``secrets_set``,
and not in plain text in any column of the devices table.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from tests.conftest import Api
from tests.support.api_helpers import DEVICES, OPS, assert_error, make_device, make_op

PASSWORD = "pw-Planted-7f3a9c1e"
PRIVATE_KEY = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\nplanted-key-0b5d2e\n-----END OPENSSH PRIVATE KEY-----"
)
PASSPHRASE = "pp-Planted-51c0d7"
CPE_PASSWORD = "cpe-Planted-9e44af"
CR_PASSWORD = "cr-Planted-2d81b6"
SECRETS = (PASSWORD, PRIVATE_KEY, PASSPHRASE, CPE_PASSWORD, CR_PASSWORD)


def _no_secret_in(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"secret {secret[:12]}… leaked: {text[:300]}"
    # JSON escapes the key's newlines; look for the escaped form too.
    assert "planted-key-0b5d2e" not in text


async def test_create_read_and_conflicts(api: Api) -> None:
    headers = await api.auth()
    r = await api.client.post(
        DEVICES,
        json={
            "id": "dev_67892",
            "name": "gw-0001",
            "protocol": "ssh",
            "connection": {"host": "192.0.2.10", "username": "admin"},
            "labels": {"site": "ams", "role": "edge"},
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    device = r.json()
    assert device["id"] == "dev_67892"
    assert device["name"] == "gw-0001"
    assert device["protocol"] == "ssh"
    assert device["labels"] == {"site": "ams", "role": "edge"}
    # The protocol's defaults are filled in and shown.
    assert device["connection"]["host"] == "192.0.2.10"
    assert device["connection"]["port"] == 22
    assert device["secrets_set"] == []
    # Status fields are the server's; a new device has not been seen.
    assert device["status"] == "unknown"
    assert device["last_seen_at"] is None and device["firmware_version"] is None
    assert r.headers["location"] == f"{api.base_url}{DEVICES}dev_67892/"

    r = await api.client.get(r.headers["location"], headers=headers)
    assert r.status_code == 200
    assert r.json() == device

    # Without an id, the server makes one.
    generated = await make_device(api, headers, "gw-0002")
    assert re.fullmatch(r"dev_[0-9a-z]+", generated["id"]), generated["id"]
    assert generated["id"] != "dev_67892"
    r = await api.client.get(f"{DEVICES}{generated['id']}/", headers=headers)
    assert r.json()["name"] == "gw-0002"

    assert_error(await api.client.get(f"{DEVICES}dev_nope/", headers=headers), 404)

    # A taken id or name is a conflict, and nothing is stored.
    r = await api.client.post(
        DEVICES, json={"id": "dev_67892", "name": "gw-other", "protocol": "cwmp"}, headers=headers
    )
    assert "dev_67892" in assert_error(r, 409)["detail"]
    r = await api.client.post(
        DEVICES, json={"id": "dev_3", "name": "gw-0002", "protocol": "cwmp"}, headers=headers
    )
    assert "gw-0002" in assert_error(r, 409)["detail"]
    r = await api.client.get(DEVICES, headers=headers)
    assert r.json()["count"] == 2


async def test_create_validation(api: Api) -> None:
    headers = await api.auth()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"protocol": "cwmp"}, "name"),
        ({"name": "x"}, "protocol"),
        ({"name": "x", "protocol": "snmp"}, "protocol"),
        ({"name": "x", "protocol": "cwmp", "id": "device-1"}, "id"),
        ({"name": " padded ", "protocol": "cwmp"}, "name"),
        ({"name": "x", "protocol": "ssh", "connection": {"username": "u"}}, "connection.host"),
        (
            {
                "name": "x",
                "protocol": "ssh",
                "connection": {"host": "h", "username": "u", "port": 0},
            },
            "connection.port",
        ),
        ({"name": "x", "protocol": "cwmp", "connection": {"telnet": True}}, "connection.telnet"),
        ({"name": "x", "protocol": "cwmp", "labels": {"site": 1}}, "labels.site"),
        ({"name": "x", "protocol": "cwmp", "status": "online"}, "status"),
    ]
    for body, field in cases:
        assert_error(await api.client.post(DEVICES, json=body, headers=headers), 400, {field})
    r = await api.client.get(DEVICES, headers=headers)
    assert r.json()["count"] == 0, "a refused device must not be stored"


async def test_patch(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(
        api,
        headers,
        "box-1",
        protocol="ssh",
        connection={
            "host": "192.0.2.20",
            "username": "ops",
            "password": PASSWORD,
            "private_key": PRIVATE_KEY,
        },
        labels={"site": "ams"},
    )
    await make_device(api, headers, "box-2", protocol="ssh")
    url = f"{DEVICES}{device['id']}/"
    assert device["secrets_set"] == ["password", "private_key"]

    r = await api.client.patch(
        url, json={"name": "box-1b", "labels": {"site": "fra"}}, headers=headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "box-1b"
    # Labels are replaced as a whole, not merged.
    assert r.json()["labels"] == {"site": "fra"}

    # Connection fields merge: what is not sent stays, secrets included.
    r = await api.client.patch(url, json={"connection": {"port": 2222}}, headers=headers)
    assert r.status_code == 200, r.text
    patched = r.json()
    assert patched["connection"]["port"] == 2222
    assert patched["connection"]["host"] == "192.0.2.20"
    assert patched["connection"]["username"] == "ops"
    assert patched["secrets_set"] == ["password", "private_key"]

    # A secret sent as null is removed; the other stays.
    r = await api.client.patch(url, json={"connection": {"password": None}}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["secrets_set"] == ["private_key"]
    assert r.json()["connection"]["port"] == 2222
    secrets = api.runtime.box.open(await _secrets_column(api, device["id"]))
    assert secrets == {"private_key": PRIVATE_KEY}

    r = await api.client.get(url, headers=headers)
    assert r.json()["name"] == "box-1b" and r.json()["secrets_set"] == ["private_key"]

    # Refusals leave the device as it was.
    assert (
        "box-2"
        in assert_error(await api.client.patch(url, json={"name": "box-2"}, headers=headers), 409)[
            "detail"
        ]
    )
    for body, field in [
        ({"connection": {"host": None}}, "connection.host"),
        ({"connection": {"port": "22"}}, "connection.port"),
        ({"protocol": "cwmp"}, "protocol"),
        ({"status": "online"}, "status"),
        ({"labels": {"bad key!": "x"}}, "labels.bad key!"),
    ]:
        assert_error(await api.client.patch(url, json=body, headers=headers), 400, {field})
    assert (await api.client.get(url, headers=headers)).json() == r.json()
    r = await api.client.patch(f"{DEVICES}dev_nope/", json={"name": "x"}, headers=headers)
    assert_error(r, 404)


async def test_delete(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-del")
    url = f"{DEVICES}{device['id']}/"
    op = await make_op(api, headers, device["id"], scheduled_at="2030-01-01T00:00:00Z")

    # A device with a scheduled operation cannot go away under it.
    assert "cancel" in assert_error(await api.client.delete(url, headers=headers), 409)["detail"]
    assert (await api.client.get(url, headers=headers)).status_code == 200

    r = await api.client.post(f"{OPS}{op['id']}/cancel/", headers=headers)
    assert r.json()["status"] == "cancelled"
    r = await api.client.delete(url, headers=headers)
    assert r.status_code == 204
    assert r.content == b""
    assert_error(await api.client.get(url, headers=headers), 404)
    assert_error(await api.client.delete(url, headers=headers), 404)
    # Its name is free again.
    await make_device(api, headers, "gw-del")


async def test_list_filters_and_pagination(api: Api) -> None:
    headers = await api.auth()
    await make_device(api, headers, "gw-2", labels={"site": "fra"})
    await make_device(api, headers, "gw-1", labels={"site": "ams", "tier": "gold"})
    await make_device(api, headers, "box-1", protocol="ssh", labels={"site": "ams"})

    async def names(**params: Any) -> list[str]:
        r = await api.client.get(DEVICES, params=params, headers=headers)
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"count", "next", "previous", "results"}
        assert body["count"] == len(body["results"])
        return [d["name"] for d in body["results"]]

    # Ordered by name.
    assert await names() == ["box-1", "gw-1", "gw-2"]
    assert await names(name="gw-2") == ["gw-2"]
    assert await names(name="gw") == []
    assert await names(protocol="ssh") == ["box-1"]
    assert await names(protocol="cwmp") == ["gw-1", "gw-2"]
    assert await names(label="site=ams") == ["box-1", "gw-1"]
    assert await names(label="tier=gold") == ["gw-1"]
    assert await names(label="site=nowhere") == []
    assert await names(label="site=ams", protocol="cwmp") == ["gw-1"]
    assert await names(status="unknown") == ["box-1", "gw-1", "gw-2"]
    assert await names(status="online") == []

    r = await api.client.get(DEVICES, params={"limit": 2}, headers=headers)
    page = r.json()
    assert page["count"] == 3
    assert [d["name"] for d in page["results"]] == ["box-1", "gw-1"]
    assert page["previous"] is None
    second = (await api.client.get(page["next"], headers=headers)).json()
    assert [d["name"] for d in second["results"]] == ["gw-2"]
    assert second["next"] is None
    first = (await api.client.get(second["previous"], headers=headers)).json()
    assert first["results"] == page["results"]
    r = await api.client.get(DEVICES, params={"offset": 1, "limit": 1}, headers=headers)
    assert [d["name"] for d in r.json()["results"]] == ["gw-1"]

    refused: list[tuple[dict[str, Any], str]] = [
        ({"protocol": "snmp"}, "protocol"),
        ({"status": "asleep"}, "status"),
        ({"label": "site"}, "label"),
        ({"label": "=ams"}, "label"),
        ({"limit": 1001}, "limit"),
        ({"offset": -1}, "offset"),
    ]
    for params, field in refused:
        assert_error(await api.client.get(DEVICES, params=params, headers=headers), 400, {field})


async def _secrets_column(api: Api, device_id: str) -> str | None:
    from headless_ops.store.schema import devices

    async with api.runtime.db.read() as conn:
        value = (
            await conn.execute(select(devices.c.secrets).where(devices.c.id == device_id))
        ).scalar_one()
    return value if value is None else str(value)


async def test_secrets_are_write_only_and_encrypted_at_rest(api: Api) -> None:
    from headless_ops.store.schema import devices

    headers = await api.auth()
    responses = []
    r = await api.client.post(
        DEVICES,
        json={
            "name": "box-secret",
            "protocol": "ssh",
            "connection": {
                "host": "192.0.2.30",
                "username": "root",
                "password": PASSWORD,
                "private_key": PRIVATE_KEY,
                "private_key_passphrase": PASSPHRASE,
            },
        },
        headers=headers,
    )
    responses.append(r)
    ssh = r.json()
    assert ssh["secrets_set"] == ["password", "private_key", "private_key_passphrase"]
    assert set(ssh["connection"]) >= {"host", "username"}
    assert not set(ssh["connection"]) & {"password", "private_key", "private_key_passphrase"}

    r = await api.client.post(
        DEVICES,
        json={
            "name": "gw-secret",
            "protocol": "cwmp",
            "connection": {
                "serial_number": "SN0001",
                "cpe_username": "cpe",
                "cpe_password": CPE_PASSWORD,
                "connection_request_password": CR_PASSWORD,
            },
        },
        headers=headers,
    )
    responses.append(r)
    cwmp = r.json()
    assert cwmp["secrets_set"] == ["connection_request_password", "cpe_password"]
    assert "cpe_password" not in cwmp["connection"]

    for device in (ssh, cwmp):
        url = f"{DEVICES}{device['id']}/"
        responses.append(await api.client.get(url, headers=headers))
        responses.append(await api.client.patch(url, json={"labels": {"a": "b"}}, headers=headers))
    responses.append(await api.client.get(DEVICES, headers=headers))
    # Error responses must not echo a secret either.
    responses.append(
        await api.client.post(
            DEVICES,
            json={
                "name": "bad",
                "protocol": "ssh",
                "connection": {"host": "not a host", "username": "u", "password": PASSWORD},
            },
            headers=headers,
        )
    )
    responses.append(
        await api.client.patch(
            f"{DEVICES}{ssh['id']}/",
            json={"connection": {"password": PASSWORD, "port": -1}},
            headers=headers,
        )
    )
    op = await make_op(api, headers, ssh["id"])
    responses.append(await api.client.get(OPS, headers=headers))
    responses.append(await api.client.get(f"{OPS}{op['id']}/", headers=headers))
    assert [r.status_code for r in responses] == [
        201,
        201,
        200,
        200,
        200,
        200,
        200,
        400,
        400,
        200,
        200,
    ]
    for r in responses:
        _no_secret_in(r.text)
        _no_secret_in(str(r.headers))

    # At rest: no column of any device row holds a secret in plain text ...
    async with api.runtime.db.read() as conn:
        rows = (await conn.execute(select(devices))).all()
    assert len(rows) == 2
    for row in rows:
        for column, value in row._mapping.items():
            assert value is None or not any(s in str(value) for s in SECRETS), column
    # ... yet they are stored, sealed, and open with the server's key.
    assert api.runtime.box.open(await _secrets_column(api, ssh["id"])) == {
        "password": PASSWORD,
        "private_key": PRIVATE_KEY,
        "private_key_passphrase": PASSPHRASE,
    }
    assert (
        api.runtime.box.open(await _secrets_column(api, cwmp["id"]))["cpe_password"] == CPE_PASSWORD
    )
