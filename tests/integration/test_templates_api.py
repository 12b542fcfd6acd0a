"""Configuration templates ``/api/v1/config_template/`` through the real server, on both engines.

Covers CRUD (201 with Location, read, list by name with pagination, PUT, DELETE, 409 on a
taken name, 404 on an unknown one), the checks at save time (Jinja2 syntax errors name
their line, a body that does not fit its format, parameter paths and types), and the
render preview for one device: device facts and variables substituted, typed parameter
values, undefined names refused (StrictUndefined), no secret of the device ever in the
context, and the sandbox refusing attribute tricks instead of rendering them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import Api
from tests.support.api_helpers import assert_error, make_device

TEMPLATES = "/api/v1/config_template/"
PASSWORD = "pw-Planted-31b7e0"
PASSPHRASE = "pp-Planted-c94a12"
CPE_PASSWORD = "cpe-Planted-5d02f8"
CR_PASSWORD = "cr-Planted-a7e613"
SECRETS = (PASSWORD, PASSPHRASE, CPE_PASSWORD, CR_PASSWORD)


async def _create(api: Api, headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await api.client.post(TEMPLATES, json=body, headers=headers)
    assert r.status_code == 201, r.text
    template: dict[str, Any] = r.json()
    return template


async def _render(
    api: Api,
    headers: dict[str, str],
    name: str,
    device_id: str,
    variables: dict[str, Any] | None = None,
) -> Any:
    body: dict[str, Any] = {"device_id": device_id}
    if variables is not None:
        body["variables"] = variables
    return await api.client.post(f"{TEMPLATES}{name}/render/", json=body, headers=headers)


async def test_crud(api: Api) -> None:
    headers = await api.auth()
    r = await api.client.post(
        TEMPLATES,
        json={
            "name": "edge-base",
            "content": "hostname {{ device.name }}\n",
            "description": "base config of edge routers",
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["name"] == "edge-base"
    assert created["format"] == "text"  # the default
    assert created["content"] == "hostname {{ device.name }}\n"
    assert created["parameters"] is None
    assert created["description"] == "base config of edge routers"
    assert created["created_at"] and created["updated_at"]
    assert r.headers["location"] == f"{api.base_url}{TEMPLATES}edge-base/"
    r = await api.client.get(r.headers["location"], headers=headers)
    assert r.status_code == 200 and r.json() == created

    # A taken name is a conflict and the stored template is unchanged.
    r = await api.client.post(
        TEMPLATES, json={"name": "edge-base", "content": "other\n"}, headers=headers
    )
    assert "edge-base" in assert_error(r, 409)["detail"]
    r = await api.client.get(f"{TEMPLATES}edge-base/", headers=headers)
    assert r.json()["content"] == "hostname {{ device.name }}\n"

    # PUT replaces the body, format included.
    r = await api.client.put(
        f"{TEMPLATES}edge-base/",
        json={"format": "parameters", "parameters": {"Device.Time.NTPServer1": "{{ ntp }}"}},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["format"] == "parameters" and updated["content"] is None
    assert updated["parameters"] == {"Device.Time.NTPServer1": "{{ ntp }}"}
    assert updated["description"] is None
    assert updated["created_at"] == created["created_at"]
    assert updated["updated_at"] >= created["updated_at"]
    assert (await api.client.get(f"{TEMPLATES}edge-base/", headers=headers)).json() == updated
    # The name is the URL's; a body naming it is refused.
    r = await api.client.put(
        f"{TEMPLATES}edge-base/", json={"name": "x", "content": "y"}, headers=headers
    )
    assert_error(r, 400, {"name"})

    # The list is ordered by name and paginated.
    for name in ("zz-last", "aa-first", "mm-middle"):
        await _create(api, headers, name=name, content=f"# {name}\n")
    r = await api.client.get(TEMPLATES, headers=headers)
    page = r.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 4
    names = ["aa-first", "edge-base", "mm-middle", "zz-last"]
    assert [t["name"] for t in page["results"]] == names
    r = await api.client.get(TEMPLATES, params={"limit": 3}, headers=headers)
    first = r.json()
    assert [t["name"] for t in first["results"]] == names[:3] and first["previous"] is None
    second = (await api.client.get(first["next"], headers=headers)).json()
    assert [t["name"] for t in second["results"]] == names[3:] and second["next"] is None

    r = await api.client.delete(f"{TEMPLATES}edge-base/", headers=headers)
    assert r.status_code == 204, r.text
    assert_error(await api.client.get(f"{TEMPLATES}edge-base/", headers=headers), 404)
    assert (await api.client.get(TEMPLATES, headers=headers)).json()["count"] == 3

    # Unknown names are 404 on every method.
    assert_error(await api.client.get(f"{TEMPLATES}nope/", headers=headers), 404)
    assert_error(await api.client.delete(f"{TEMPLATES}nope/", headers=headers), 404)
    r = await api.client.put(f"{TEMPLATES}nope/", json={"content": "x"}, headers=headers)
    assert_error(r, 404)
    device = await make_device(api, headers, "gw-1")
    assert_error(await _render(api, headers, "nope", device["id"]), 404)


async def test_concurrent_creates_of_one_name(api: Api) -> None:
    """Creates of one name racing each other: one 201, the others 409 — never a 500 from
    the primary key on PostgreSQL, where both can pass the existence check."""
    headers = await api.auth()
    for n in range(3):
        responses = await asyncio.gather(
            *(
                api.client.post(
                    TEMPLATES, json={"name": f"race-{n}", "content": f"{i}\n"}, headers=headers
                )
                for i in range(4)
            )
        )
        assert sorted(r.status_code for r in responses) == [201, 409, 409, 409], [
            r.text for r in responses
        ]
        for r in responses:
            if r.status_code == 409:
                assert_error(r, 409)
    assert (await api.client.get(TEMPLATES, headers=headers)).json()["count"] == 3


async def test_tenants_and_scopes(api: Api) -> None:
    a, b = await api.auth(tenant="tenant-a"), await api.auth(tenant="tenant-b")
    await _create(api, a, name="shared-name", content="a\n")
    assert (await api.client.get(TEMPLATES, headers=b)).json()["count"] == 0
    assert_error(await api.client.get(f"{TEMPLATES}shared-name/", headers=b), 404)
    assert_error(await api.client.delete(f"{TEMPLATES}shared-name/", headers=b), 404)
    # Names are per tenant.
    await _create(api, b, name="shared-name", content="b\n")
    r = await api.client.get(f"{TEMPLATES}shared-name/", headers=a)
    assert r.json()["content"] == "a\n"

    reader = await api.auth(tenant="tenant-a", scopes=["devices:read"])
    assert (await api.client.get(f"{TEMPLATES}shared-name/", headers=reader)).status_code == 200
    r = await api.client.post(TEMPLATES, json={"name": "x", "content": "x"}, headers=reader)
    assert_error(r, 403)
    assert_error(await api.client.delete(f"{TEMPLATES}shared-name/", headers=reader), 403)
    # Previewing is reading.
    device = await make_device(api, a, "gw-a")
    r = await _render(api, reader, "shared-name", device["id"])
    assert r.status_code == 200, r.text
    # B's device is not A's to render for.
    device_b = await make_device(api, b, "gw-b")
    assert_error(await _render(api, a, "shared-name", device_b["id"]), 404)


async def test_validation(api: Api) -> None:
    headers = await api.auth()

    # A Jinja2 syntax error is refused at save time, and the message names the line.
    r = await api.client.post(
        TEMPLATES,
        json={"name": "broken", "content": "hostname x\nntp y\n{% if device.name %}\nz\n"},
        headers=headers,
    )
    body = assert_error(r, 400, {"content"})
    [message] = [e["message"] for e in body["errors"] if e["field"] == "content"]
    assert "line 3" in message, message
    r = await api.client.post(
        TEMPLATES,
        json={"name": "broken", "content": "one\ntwo {{ device.name }\n"},
        headers=headers,
    )
    body = assert_error(r, 400, {"content"})
    assert "line 2" in body["errors"][0]["message"], body
    # In a parameter's value, the field is the parameter.
    r = await api.client.post(
        TEMPLATES,
        json={
            "name": "broken",
            "format": "parameters",
            "parameters": {"Device.Time.NTPServer1": "{{ ntp ", "Device.Time.Enable": True},
        },
        headers=headers,
    )
    body = assert_error(r, 400, {"parameters.Device.Time.NTPServer1"})
    assert "line 1" in body["errors"][0]["message"]

    cases: list[tuple[dict[str, Any], str]] = [
        # The body must fit the format.
        ({"name": "t"}, "content"),
        (
            {"name": "t", "format": "text", "parameters": {"Device.A": "x"}, "content": "x"},
            "parameters",
        ),
        ({"name": "t", "format": "parameters"}, "parameters"),
        ({"name": "t", "format": "parameters", "parameters": {}}, "parameters"),
        (
            {"name": "t", "format": "parameters", "parameters": {"Device.A": "x"}, "content": "x"},
            "content",
        ),
        ({"name": "t", "format": "xml", "content": "x"}, "format"),
        # Names, paths, types.
        ({"name": "../etc", "content": "x"}, "name"),
        ({"content": "x"}, "name"),
        ({"name": "t", "content": 5}, "content"),
        ({"name": "t", "content": "x", "extra": 1}, "extra"),
        (
            {"name": "t", "format": "parameters", "parameters": {"not a path": "x"}},
            "parameters.not a path",
        ),
        (
            {"name": "t", "format": "parameters", "parameters": {"Device.Time.": "x"}},
            "parameters.Device.Time.",
        ),
    ]
    for payload, field in cases:
        r = await api.client.post(TEMPLATES, json=payload, headers=headers)
        assert_error(r, 400, {field})

    # A typed value must have a known XSD type; a float is no parameter value.
    for spec in ({"value": "1", "type": "float"}, {"value": 1.5}, 1.5, None, ["x"]):
        r = await api.client.post(
            TEMPLATES,
            json={"name": "t", "format": "parameters", "parameters": {"Device.A.B": spec}},
            headers=headers,
        )
        body = assert_error(r, 400)
        assert any(e["field"].startswith("parameters.Device.A.B") for e in body["errors"]), body

    # A JSON body is required.
    r = await api.client.post(
        TEMPLATES, content=b"name=t", headers={**headers, "Content-Type": "text/plain"}
    )
    assert_error(r, 415)
    assert (await api.client.get(TEMPLATES, headers=headers)).json()["count"] == 0


async def test_render_text_for_a_device(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(
        api,
        headers,
        "gw-ams-1",
        protocol="ssh",
        connection={"host": "192.0.2.10", "username": "ops", "password": PASSWORD},
        labels={"site": "ams", "role": "edge"},
    )
    await _create(
        api,
        headers,
        name="edge-base",
        content=(
            "hostname {{ device.name }}\n"
            "! {{ device.id }} at {{ device.labels.site }} via {{ device.connection.host }}\n"
            "ntp server {{ vars.ntp }}\n"
            "ntp server {{ ntp }}\n"  # each variable is also a name of its own
            "{% for s in vars.syslog %}logging host {{ s }}\n{% endfor %}"
            "{{ '%05d' | format(vars.vlan) }}"
        ),
    )
    r = await _render(
        api,
        headers,
        "edge-base",
        device["id"],
        {"ntp": "10.0.0.1", "syslog": ["10.9.0.1", "10.9.0.2"], "vlan": 42},
    )
    assert r.status_code == 200, r.text
    assert r.json() == {
        "format": "text",
        "content": (
            "hostname gw-ams-1\n"
            f"! {device['id']} at ams via 192.0.2.10\n"
            "ntp server 10.0.0.1\n"
            "ntp server 10.0.0.1\n"
            "logging host 10.9.0.1\n"
            "logging host 10.9.0.2\n"
            "00042"
        ),
        "parameters": None,
    }
    # Values are not HTML-escaped: this is configuration.
    await _create(api, headers, name="raw", content="banner {{ vars.banner }}")
    r = await _render(api, headers, "raw", device["id"], {"banner": "<a & 'b'>"})
    assert r.json()["content"] == "banner <a & 'b'>"

    # Undefined names fail the rendering instead of rendering empty.
    for variables, missing in (
        ({}, "'ntp'"),  # vars.ntp is the first use
        ({"ntp": "10.0.0.1"}, "'syslog'"),
        ({"ntp": "10.0.0.1", "syslog": []}, "'vlan'"),
    ):
        body = assert_error(await _render(api, headers, "edge-base", device["id"], variables), 400)
        assert missing in body["errors"][0]["message"], body
    await _create(api, headers, name="typo", content="hostname {{ device.nmae }}\n")
    body = assert_error(await _render(api, headers, "typo", device["id"]), 400)
    assert "nmae" in body["errors"][0]["message"], body

    # The render request itself is validated; an unknown device is 404.
    r = await api.client.post(f"{TEMPLATES}raw/render/", json={}, headers=headers)
    assert_error(r, 400, {"device_id"})
    r = await api.client.post(
        f"{TEMPLATES}raw/render/", json={"device_id": device["id"], "vars": {}}, headers=headers
    )
    assert_error(r, 400, {"vars"})
    assert_error(await _render(api, headers, "raw", "dev_nope", {"banner": "x"}), 404)


async def test_render_parameters_with_types(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(
        api, headers, "cpe-1", connection={"product_class": "BM632w"}, labels={"site": "fra"}
    )
    await _create(
        api,
        headers,
        name="ntp",
        format="parameters",
        parameters={
            "Device.Time.NTPServer1": "{{ vars.ntp }}",
            "Device.Time.Enable": True,
            "Device.ManagementServer.PeriodicInformInterval": {
                "value": "{{ interval }}",
                "type": "unsignedInt",
            },
            "Device.DeviceInfo.ProvisioningCode": {"value": "{{ device.labels.site | upper }}"},
            "Device.X_Vendor.Retries": 3,
            "Device.X_Vendor.Mode": {"value": False, "type": "boolean"},
            "Device.WiFi.SSID.{i}.SSID": "{{ device.name }}-{{ device.connection.product_class }}",
        },
    )
    r = await _render(api, headers, "ntp", device["id"], {"ntp": "pool.ntp.org", "interval": 300})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["format"] == "parameters" and out["content"] is None
    rendered = {p["name"]: (p["value"], p["type"]) for p in out["parameters"]}
    assert len(out["parameters"]) == len(rendered) == 7
    assert rendered == {
        "Device.Time.NTPServer1": ("pool.ntp.org", "string"),
        "Device.Time.Enable": (True, "boolean"),
        # Rendering makes text; the type tells the device what it is.
        "Device.ManagementServer.PeriodicInformInterval": ("300", "unsignedInt"),
        "Device.DeviceInfo.ProvisioningCode": ("FRA", "string"),
        "Device.X_Vendor.Retries": (3, "int"),
        "Device.X_Vendor.Mode": (False, "boolean"),
        "Device.WiFi.SSID.{i}.SSID": ("cpe-1-BM632w", "string"),
    }
    # The stored template keeps the typed form with its defaults filled in.
    stored = (await api.client.get(f"{TEMPLATES}ntp/", headers=headers)).json()["parameters"]
    assert stored["Device.DeviceInfo.ProvisioningCode"] == {
        "value": "{{ device.labels.site | upper }}",
        "type": "string",
    }
    assert stored["Device.Time.Enable"] is True

    body = assert_error(await _render(api, headers, "ntp", device["id"], {"ntp": "x"}), 400)
    # The error names the parameter whose value did not render.
    assert "PeriodicInformInterval" in body["errors"][0]["message"], body


async def test_render_context_holds_no_secret(api: Api) -> None:
    headers = await api.auth()
    ssh = await make_device(
        api,
        headers,
        "gw-secret",
        protocol="ssh",
        connection={
            "host": "192.0.2.77",
            "username": "ops",
            "password": PASSWORD,
            "private_key_passphrase": PASSPHRASE,
        },
    )
    cwmp = await make_device(
        api,
        headers,
        "cpe-secret",
        connection={
            "serial_number": "SN-0001",
            "cpe_username": "cpe",
            "cpe_password": CPE_PASSWORD,
            "connection_request_username": "cr",
            "connection_request_password": CR_PASSWORD,
        },
    )
    await _create(
        api,
        headers,
        name="dump",
        content="{{ device.connection }}|{{ device }}|{{ vars }}|{{ facts }}",
    )
    await _create(
        api,
        headers,
        name="dump-params",
        format="parameters",
        parameters={"Device.X.Dump": "{{ device }}"},
    )
    for device, public in ((ssh, "192.0.2.77"), (cwmp, "SN-0001")):
        for name in ("dump", "dump-params"):
            r = await _render(api, headers, name, device["id"])
            assert r.status_code == 200, r.text
            assert public in r.text  # the public fields are there
            for secret in SECRETS:
                assert secret not in r.text, f"{secret} leaked through {name}: {r.text[:300]}"
        # Named directly, a secret field is simply undefined.
        for field in ("password", "cpe_password", "connection_request_password"):
            await api.client.delete(f"{TEMPLATES}probe/", headers=headers)
            await _create(
                api, headers, name="probe", content=f"{{{{ device.connection.{field} }}}}"
            )
            body = assert_error(await _render(api, headers, "probe", device["id"]), 400)
            for secret in SECRETS:
                assert secret not in str(body)


async def test_sandbox(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-1")
    attacks = [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ device.__class__.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ self._TemplateReference__context }}",
        "{{ vars.update({'x': 1}) }}",  # the context is immutable too
        "{{ device.labels.clear() }}",
    ]
    for i, source in enumerate(attacks):
        name = f"attack-{i}"
        await _create(api, headers, name=name, content=source)
        r = await _render(api, headers, name, device["id"])
        body = assert_error(r, 400)
        assert "unsafe" in body["errors"][0]["message"], (source, body)
        assert "<class" not in r.text and "uid=" not in r.text, (source, body)
    # The device is untouched by the attempts.
    r = await api.client.get(f"/api/v1/inventory_device/{device['id']}/", headers=headers)
    assert r.json()["labels"] == device["labels"]
