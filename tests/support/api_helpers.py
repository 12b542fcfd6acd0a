"""Small helpers for the REST API integration tests: paths, factories and the error shape."""

from __future__ import annotations

from typing import Any

import httpx2

from tests.conftest import Api

__all__ = [
    "BY_NAME",
    "DEVICES",
    "OPS",
    "assert_error",
    "make_device",
    "make_op",
]

OPS = "/api/v1/inventory_device_headless_operation/"
BY_NAME = "/api/v1/inventory_device_name_headless_operation/"
DEVICES = "/api/v1/inventory_device/"


def assert_error(
    response: httpx2.Response, status: int, fields: set[str] | None = None
) -> dict[str, Any]:
    """Assert ``response`` is ``status`` in the one error shape; ``fields`` must be among
    the ``errors[].field`` values. Returns the body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body: dict[str, Any] = response.json()
    assert set(body) == {"detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"], body
    assert isinstance(body["errors"], list), body
    for item in body["errors"]:
        assert set(item) == {"field", "message"}, item
        assert isinstance(item["field"], str) and isinstance(item["message"], str), item
    if fields is not None:
        named = {item["field"] for item in body["errors"]}
        assert fields <= named, (fields, body)
    return body


async def make_device(
    api: Api, headers: dict[str, str], name: str, protocol: str = "cwmp", **extra: Any
) -> dict[str, Any]:
    """Create a device (``connection`` defaults to a valid one for ``protocol``)."""
    body: dict[str, Any] = {"name": name, "protocol": protocol, **extra}
    if "connection" not in body:
        body["connection"] = {"host": "10.0.0.1", "username": "admin"} if protocol == "ssh" else {}
    r = await api.client.post(DEVICES, json=body, headers=headers)
    assert r.status_code == 201, r.text
    device: dict[str, Any] = r.json()
    return device


async def make_op(
    api: Api,
    headers: dict[str, str],
    device_id: str,
    operation_type: str = "reboot",
    **extra: Any,
) -> dict[str, Any]:
    """Schedule an operation through the by-id endpoint (JSON object form)."""
    body = {"device_id": device_id, "operation_type": operation_type, **extra}
    r = await api.client.post(OPS, json=body, headers=headers)
    assert r.status_code == 201, r.text
    op: dict[str, Any] = r.json()
    return op
