"""Errors through the real server, on both engines: one shape, the right status, no 500.

Covers 401 (with ``WWW-Authenticate: Bearer``) for missing, malformed, unknown, wrong-secret,
expired and revoked tokens on every endpoint; 403 for a missing scope on every endpoint;
415 for an unsupported or missing Content-Type; 413 over ``max_body_bytes`` with and without
Content-Length; 400 for malformed JSON, duplicate keys, NaN, integers beyond 64 bits and NUL
characters (which PostgreSQL cannot store); 404 and 405 in the error shape; /healthz and
/readyz.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from headless_ops.auth.tokens import create_token, revoke_token
from tests.conftest import Api
from tests.support.api_helpers import BY_NAME, DEVICES, OPS, assert_error, make_device

# Every endpoint of the contract, with the scope it needs. Ids need not exist: auth comes first.
ENDPOINTS: list[tuple[str, str, str]] = [
    ("GET", OPS, "operations:read"),
    ("POST", OPS, "operations:write"),
    ("GET", f"{OPS}op_x/", "operations:read"),
    ("POST", f"{OPS}op_x/cancel/", "operations:write"),
    ("GET", BY_NAME, "operations:read"),
    ("POST", BY_NAME, "operations:write"),
    ("GET", f"{BY_NAME}op_x/", "operations:read"),
    ("POST", f"{BY_NAME}op_x/cancel/", "operations:write"),
    ("GET", DEVICES, "devices:read"),
    ("POST", DEVICES, "devices:write"),
    ("GET", f"{DEVICES}dev_x/", "devices:read"),
    ("PATCH", f"{DEVICES}dev_x/", "devices:write"),
    ("DELETE", f"{DEVICES}dev_x/", "devices:write"),
]
ALL_SCOPES = ["operations:read", "operations:write", "devices:read", "devices:write", "admin"]
# A body each write endpoint would accept, so only auth can refuse it.
BODY = {
    OPS: {"device_id": "dev_x", "operation_type": "reboot"},
    BY_NAME: {"device_name": "x", "operation_type": "reboot"},
    DEVICES: {"name": "x", "protocol": "cwmp"},
    f"{DEVICES}dev_x/": {"name": "y"},
}


async def test_401_for_every_kind_of_bad_token_on_every_endpoint(api: Api) -> None:
    db, hasher = api.runtime.db, api.runtime.hasher
    good_id, good = await create_token(db, hasher, tenant="acme", name="t", scopes=["admin"])
    _, expired = await create_token(
        db,
        hasher,
        tenant="acme",
        name="old",
        scopes=["admin"],
        expires_at=datetime.now(UTC) - timedelta(seconds=1),
    )
    _, not_yet_expired = await create_token(
        db,
        hasher,
        tenant="acme",
        name="new",
        scopes=["admin"],
        expires_at=datetime.now(UTC) + timedelta(hours=1),
    )
    revoked_id, revoked = await create_token(db, hasher, tenant="acme", name="r", scopes=["admin"])
    await revoke_token(db, revoked_id)
    secret = good.split(".", 1)[1]

    bad_headers: dict[str, dict[str, str]] = {
        "missing": {},
        "empty": {"Authorization": ""},
        "not bearer": {"Authorization": f"Basic {good}"},
        "bearer without token": {"Authorization": "Bearer"},
        "malformed": {"Authorization": "Bearer not-a-token"},
        "no secret": {"Authorization": f"Bearer {good_id}"},
        "unknown id": {"Authorization": f"Bearer tok_0000000000000000.{secret}"},
        "wrong secret": {"Authorization": f"Bearer {good_id}.{'A' * len(secret)}"},
        "expired": {"Authorization": f"Bearer {expired}"},
        "revoked": {"Authorization": f"Bearer {revoked}"},
    }
    for method, path, _scope in ENDPOINTS:
        for why, headers in bad_headers.items():
            r = await api.client.request(method, path, json=BODY.get(path), headers=headers)
            assert_error(r, 401)
            assert r.headers["www-authenticate"].startswith("Bearer"), (why, method, path)
    # The same token id with its real secret, and a token whose expiry is ahead, are let in.
    for token in (good, not_yet_expired):
        r = await api.client.get(OPS, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text


async def test_403_for_a_missing_scope_on_every_endpoint(api: Api) -> None:
    for method, path, scope in ENDPOINTS:
        # Every other scope, but not this one (nor admin, which implies all).
        others = [s for s in ALL_SCOPES if s not in (scope, "admin")]
        headers = await api.auth(scopes=others)
        r = await api.client.request(method, path, json=BODY.get(path), headers=headers)
        body = assert_error(r, 403)
        assert scope in body["detail"], (method, path, body)
        assert "www-authenticate" not in r.headers

        # That one scope is enough: the request gets past auth (to 200, 201 or 404).
        headers = await api.auth(scopes=[scope])
        r = await api.client.request(method, path, json=BODY.get(path), headers=headers)
        assert r.status_code not in (401, 403), (method, path, r.text)


async def test_415_for_unsupported_or_missing_content_type(api: Api) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-1")
    targets = [
        ("POST", OPS, {"device_id": device["id"], "operation_type": "reboot"}),
        ("POST", BY_NAME, {"device_name": "gw-1", "operation_type": "reboot"}),
        ("POST", DEVICES, {"name": "gw-2", "protocol": "cwmp"}),
        ("PATCH", f"{DEVICES}{device['id']}/", {"name": "gw-3"}),
    ]
    for method, path, body in targets:
        raw = json.dumps(body).encode()
        for content_type in ("text/plain", "application/xml", None):
            sent = dict(headers)
            if content_type:
                sent["Content-Type"] = content_type
            r = await api.client.request(method, path, content=raw, headers=sent)
            assert r.request.headers.get("content-type") == content_type
            assert_error(r, 415)
    # The inventory takes JSON only; a form is a 415 there, not a parse attempt.
    r = await api.client.post(DEVICES, data={"data": "{}"}, headers=headers)
    assert_error(r, 415)
    # Nothing was created or changed by the refused requests.
    r = await api.client.get(DEVICES, headers=headers)
    assert [d["name"] for d in r.json()["results"]] == ["gw-1"]
    r = await api.client.get(OPS, headers=headers)
    assert r.json()["count"] == 0


async def test_413_over_the_body_limit_with_and_without_content_length(api: Api) -> None:
    headers = await api.auth()
    limit = api.runtime.settings.max_body_bytes
    await make_device(api, headers, "gw-1", id="dev_1")
    body = b'{"device_id": "dev_1", "operation_type": "reboot"}'

    # Exactly at the limit is accepted (padding is JSON whitespace).
    r = await api.client.post(
        OPS,
        content=body + b" " * (limit - len(body)),
        headers={**headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text

    over = body + b" " * (limit - len(body) + 1)
    for path in (OPS, DEVICES):
        r = await api.client.post(
            path, content=over, headers={**headers, "Content-Type": "application/json"}
        )
        assert_error(r, 413)

    async def chunks() -> AsyncIterator[bytes]:
        # No Content-Length: the limit has to hold while the body streams in.
        yield body
        sent = len(body)
        while sent <= limit:
            yield b" " * 65536
            sent += 65536

    r = await api.client.post(
        OPS, content=chunks(), headers={**headers, "Content-Type": "application/json"}
    )
    assert "content-length" not in r.request.headers
    assert r.request.headers["transfer-encoding"] == "chunked"
    assert_error(r, 413)
    r = await api.client.get(OPS, headers=headers)
    assert r.json()["count"] == 1


async def test_multipart_headers_do_not_raise_the_body_limit(api: Api) -> None:
    # The envelope slack of multipart uploads is for the firmware route only, and counted
    # once: a request repeating the header gets no more room, with or without a token.
    limit = api.runtime.settings.max_body_bytes
    port = api.base_url.rsplit(":", 1)[1]
    head = (
        f"POST {OPS} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + "Content-Type: multipart/form-data; boundary=x\r\n" * 40
        + f"Content-Length: {limit + 1}\r\n\r\n"
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", int(port))
    try:
        writer.write(head.encode())
        await writer.drain()
        answer = await reader.read()  # answered from the head alone, then closed
    finally:
        writer.close()
        await writer.wait_closed()
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"larger than {limit} bytes".encode() in answer


async def test_400_for_json_the_contract_refuses(api: Api) -> None:
    headers = await api.auth()
    await make_device(api, headers, "gw-1", id="dev_1")
    as_json = {**headers, "Content-Type": "application/json"}
    bad_bodies = [
        b'{"device_id": "dev_1", "operation_type": ',
        b'{"device_id": "dev_1", "device_id": "dev_1", "operation_type": "reboot"}',
        b'{"device_id": "dev_1", "operation_type": "reboot", "max_attempts": NaN}',
        b'{"device_id": "dev_1", "operation_type": "backup_configuration", '
        b'"parameters": {"backup_location": "s3://b/", "retention_days": 18446744073709551616}}',
        b'{"device_id": "dev_1", "operation_type": "reboot", "x": Infinity}',
        b"\xff\xfe",
        b"",
        b"[]",
        b'"dev_1"',
    ]
    for raw in bad_bodies:
        for path in (OPS, DEVICES):
            assert_error(await api.client.post(path, content=raw, headers=as_json), 400)
    r = await api.client.patch(
        f"{DEVICES}dev_1/", content=b'{"name": "a", "name": "b"}', headers=as_json
    )
    assert_error(r, 400)

    # Inside the escaped-string and form forms, the same refusals name the field ``data``.
    for text in ('{"a": 1, "a": 2}', '{"device_id": NaN}', '{"n": 18446744073709551616}', "{"):
        r = await api.client.post(OPS, json={"data": text}, headers=headers)
        assert_error(r, 400, {"data"})
        r = await api.client.post(OPS, data={"data": text}, headers=headers)
        assert_error(r, 400, {"data"})
    r = await api.client.post(OPS, json={"data": 42}, headers=headers)
    assert_error(r, 400, {"data"})
    r = await api.client.post(OPS, data={"other": "{}"}, headers=headers)
    assert_error(r, 400)
    r = await api.client.get(OPS, headers=headers)
    assert r.json()["count"] == 0


async def test_nul_characters_are_a_400_on_both_engines(api: Api) -> None:
    # PostgreSQL can store U+0000 neither in text nor in JSONB: each of these was a 500 there.
    headers = await api.auth()
    device = await make_device(api, headers, "gw-1")
    dev = device["id"]
    requests: list[tuple[str, str, dict[str, object], str | None]] = [
        ("GET", OPS, {"params": {"id": "op_\x00"}}, None),
        ("GET", OPS, {"params": {"device_id": "dev_\x00"}}, None),
        ("GET", BY_NAME, {"params": {"device_name": "gw\x00"}}, None),
        ("GET", f"{OPS}op_%00/", {}, None),
        ("POST", f"{OPS}op_%00/cancel/", {}, None),
        ("GET", DEVICES, {"params": {"label": "site=\x00"}}, None),
        ("GET", f"{DEVICES}dev_%00/", {}, None),
        ("POST", OPS, {"json": {"device_id": "dev_\x00", "operation_type": "reboot"}}, "device_id"),
        (
            "POST",
            BY_NAME,
            {"json": {"device_name": "gw\x00", "operation_type": "reboot"}},
            "device_name",
        ),
        (
            "POST",
            OPS,
            {
                "json": {
                    "device_id": dev,
                    "operation_type": "configuration_sync",
                    "parameters": {"config_template": "t", "variables": {"k": ["ok", "a\x00"]}},
                }
            },
            "parameters.variables.k.1",
        ),
        (
            "POST",
            DEVICES,
            {"json": {"name": "x", "protocol": "cwmp", "labels": {"site": "\x00"}}},
            "labels.site",
        ),
        (
            "PATCH",
            f"{DEVICES}{dev}/",
            {"json": {"connection": {"serial_number": "S\x00N"}}},
            "connection.serial_number",
        ),
    ]
    for method, path, kwargs, field in requests:
        r = await api.client.request(method, path, headers=headers, **kwargs)  # type: ignore[arg-type]
        assert_error(r, 400, {field} if field else None)
    # An unknown device name in the list filter is simply no match (it used a NUL sentinel).
    r = await api.client.get(BY_NAME, params={"device_name": "gw-unknown"}, headers=headers)
    assert r.status_code == 200 and r.json()["count"] == 0


async def test_unknown_route_and_wrong_method(api: Api) -> None:
    headers = await api.auth()
    for path in ("/api/v1/nope/", "/nope", "/api/v2/inventory_device/"):
        assert_error(await api.client.get(path, headers=headers), 404)
    for method, path in [
        ("PUT", OPS),
        ("DELETE", OPS),
        ("DELETE", f"{OPS}op_x/"),
        ("GET", f"{OPS}op_x/cancel/"),
        ("PUT", f"{DEVICES}dev_x/"),
        ("POST", f"{DEVICES}dev_x/"),
        ("POST", "/healthz"),
    ]:
        r = await api.client.request(method, path, headers=headers)
        assert_error(r, 405)
        assert "allow" in r.headers, (method, path)
    # A malformed Idempotency-Key is a 400 naming the header, not a 422.
    r = await api.client.post(
        OPS, json=BODY[OPS], headers={**headers, "Idempotency-Key": "has space"}
    )
    assert_error(r, 400, {"Idempotency-Key"})


async def test_health_and_readiness(api: Api, engine_name: str) -> None:
    # Both answer without a token: probes carry none.
    r = await api.client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}
    r = await api.client.get("/readyz")
    assert r.status_code == 200
    assert r.json() == {"status": "ready", "database": engine_name}
