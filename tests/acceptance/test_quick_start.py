"""The README's quick start, as a newcomer runs it: ``serve --demo`` (what ``make run``
starts) in its own process, then the README's own requests, read from the README itself.

The firmware update of the simulated TR-069 gateway must complete with the version checked,
the listing with ``update_status=true`` must answer, and a backup of the demo's simulated
SSH router must complete. SQLite, the embedded default the quick start uses.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import httpx2

from tests.support.server import free_port, start_server

README = Path(__file__).resolve().parents[2] / "README.md"
OPS = "/api/v1/inventory_device_headless_operation/"


def _quick_start_requests() -> tuple[dict[str, Any], str]:
    """The README's POST body and the path of its listing request."""
    text = README.read_text(encoding="utf-8")
    body = re.search(r"-d '(\{.*?\})'", text, re.S)
    listing = re.search(r'curl -s "http://127\.0\.0\.1:8080(/api/v1/[^"]+)"', text)
    assert body and listing, "the README's quick start lost its example requests"
    parsed: dict[str, Any] = json.loads(body.group(1))
    return parsed, listing.group(1)


def _wait_terminal(client: httpx2.Client, op_id: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = client.get(f"{OPS}{op_id}/").json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, json.dumps(body)
        time.sleep(0.1)


def test_the_readme_quick_start_works_on_the_demo(tmp_path: Path) -> None:
    body, listing = _quick_start_requests()
    # The demo's CPEs need the ACS on a known port (the tests' default is an ephemeral one).
    data_dir = tmp_path / "data"
    server = start_server(
        data_dir, args=["--demo"], env={"HEADLESS_OPS_CWMP_PORT": str(free_port())}
    )
    try:
        assert server.admin_token, server.stdout()  # printed once, on the first start
        with server.client() as client:
            devices = client.get("/api/v1/inventory_device/").json()
            assert {d["id"] for d in devices["results"]} >= {body["device_id"], "dev_67892"}

            r = client.post(OPS, json=body)
            assert r.status_code == 201, r.text
            done = _wait_terminal(client, r.json()["id"], timeout=60)
            assert done["status"] == "completed", done
            result = done["result"]
            assert result["firmware_version"] == body["parameters"]["firmware_version"]
            assert result["version_verified"] is True
            device = client.get(f"/api/v1/inventory_device/{body['device_id']}/").json()
            assert device["firmware_version"] == body["parameters"]["firmware_version"]

            r = client.get(listing)
            assert r.status_code == 200, r.text
            assert r.json()["count"] >= 1

            # The SSH router is a simulated IOS-like device: a backup of its configuration
            # completes, over real SSH, into the data directory's backups.
            _router_key(client)
            done = _backup_router(client, data_dir)
            assert done["status"] == "completed", done
            backup_id = done["result"]["backup_id"]
            content = client.get(f"/api/v1/inventory_device/dev_67892/backups/{backup_id}/content")
            assert content.status_code == 200, content.text
            assert "hostname demo-router-1" in content.text
    finally:
        server.stop()


def _router_key(client: httpx2.Client, previous: str | None = None) -> str:
    """The demo router's pinned host key, once its entry points at this start's router
    (the demo registers it a moment after the server answers, with a fresh key)."""
    deadline = time.monotonic() + 30
    while True:
        connection = client.get("/api/v1/inventory_device/dev_67892/").json()["connection"]
        key = connection.get("host_key")
        if key and key != previous:
            return str(key)
        assert time.monotonic() < deadline, connection
        time.sleep(0.05)


def _backup_router(client: httpx2.Client, data_dir: Path) -> dict[str, Any]:
    r = client.post(
        OPS,
        json={
            "device_id": "dev_67892",
            "operation_type": "backup_configuration",
            "parameters": {"backup_location": (data_dir / "backups").as_uri() + "/"},
        },
    )
    assert r.status_code == 201, r.text
    return _wait_terminal(client, r.json()["id"], timeout=60)


def test_the_demo_starts_again_on_its_data(tmp_path: Path) -> None:
    # A second `make run` on the same data: no new admin token, the demo devices kept, and
    # the router (a new host key and port at each start) reachable again.
    data_dir = tmp_path / "data"
    env = {"HEADLESS_OPS_CWMP_PORT": str(free_port())}
    first = start_server(data_dir, args=["--demo"], env=env)
    try:
        token = first.admin_token
        assert token
        with first.client() as client:
            key = _router_key(client)
            assert _backup_router(client, data_dir)["status"] == "completed"
    finally:
        first.stop()
    second = start_server(data_dir, args=["--demo"], env=env)
    try:
        assert second.admin_token is None  # shown once, on the first start only
        with second.client(token) as client:
            devices = client.get("/api/v1/inventory_device/").json()
            assert devices["count"] == 3
            _router_key(client, previous=key)
            done = _backup_router(client, data_dir)
            assert done["status"] == "completed", done
    finally:
        second.stop()
