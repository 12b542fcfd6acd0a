"""``update_status=true`` through the real server, on both engines, with a helper defined here.

The helper below implements the Helper protocol for ``ssh`` and is registered in the running
server's registry for one test at a time. Covers: the devices of the page (and only those)
get status, ``last_seen_at`` and ``firmware_version`` from the helper; the helper sees the
device's secrets decrypted; a hanging helper is cut off at ``status_refresh_timeout_s`` and its
device reported offline with a reason, while the request still answers 200 promptly; at most
``status_refresh_concurrency`` refreshes run at once; a helper that raises makes its device
offline, a protocol without a helper makes it unknown; and a helper's
``supported_operations`` decides which types POST accepts for its protocol.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from headless_ops.auth.tokens import ensure_tenant
from headless_ops.domain.devices import DEFAULT_CAPABILITIES, DeviceStatus, Protocol
from headless_ops.domain.operations import OperationType
from headless_ops.helpers.base import (
    DeviceView,
    Helper,
    OperationContext,
    PermanentError,
    StatusReport,
)
from headless_ops.store import devices as device_store
from tests.conftest import Api
from tests.support.api_helpers import BY_NAME, DEVICES, OPS, assert_error, make_device, make_op

SEEN = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
PASSWORD = "pw-Refresh-4c2e91"


class ScriptedSshHelper:
    """An ``ssh`` helper whose answer depends on the device's name prefix:

    ``ok-`` online (firmware 9.9.9, seen at SEEN), ``hang-`` never answers, ``stuck-`` never
    answers and, once cancelled, cleans up until ``release`` is set (think of closing a
    connection to a dead host), ``boom-`` raises, ``slow-`` online after ``delay`` seconds.
    Records every call and the most that ran at once.
    """

    protocol = "ssh"

    def __init__(
        self,
        supported: frozenset[OperationType] = DEFAULT_CAPABILITIES[Protocol.SSH],
        delay: float = 0.05,
    ) -> None:
        self.supported_operations = supported
        self.delay = delay
        self.seen: list[DeviceView] = []
        self.cancelled: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.release = asyncio.Event()

    async def refresh_status(self, device: DeviceView) -> StatusReport:
        self.seen.append(device)
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            if device.name.startswith(("hang-", "stuck-")):
                await asyncio.Event().wait()
            if device.name.startswith("boom-"):
                raise RuntimeError(f"cannot reach {device.connection['host']}")
            if device.name.startswith("slow-"):
                await asyncio.sleep(self.delay)
            return StatusReport(DeviceStatus.ONLINE, seen_at=SEEN, firmware_version="9.9.9")
        except asyncio.CancelledError:
            self.cancelled.append(device.name)
            if device.name.startswith("stuck-"):
                await self.release.wait()
            raise
        finally:
            self.running -= 1

    async def execute(self, context: OperationContext) -> dict[str, Any]:
        raise PermanentError("unsupported", "this test helper does not run operations")


@pytest.fixture
def register(api: Api) -> Iterator[Callable[[Helper], None]]:
    """Register helpers in the server's registry; unregistered again after the test."""
    protocols: list[str] = []

    def add(helper: Helper) -> None:
        assert isinstance(helper, Helper)
        api.runtime.registry.register(helper)
        protocols.append(helper.protocol)

    yield add
    for protocol in protocols:
        api.runtime.registry.unregister(protocol)


def _configure(api: Api, **changes: Any) -> None:
    # The route reads the runtime's settings on every request; give it a changed copy.
    api.runtime.settings = api.runtime.settings.model_copy(update=changes)


async def _ssh_device(api: Api, headers: dict[str, str], name: str) -> dict[str, Any]:
    return await make_device(
        api,
        headers,
        name,
        protocol="ssh",
        connection={"host": "192.0.2.1", "username": "ops", "password": PASSWORD},
    )


async def _device(api: Api, headers: dict[str, str], device_id: str) -> dict[str, Any]:
    r = await api.client.get(f"{DEVICES}{device_id}/", headers=headers)
    assert r.status_code == 200
    device: dict[str, Any] = r.json()
    return device


async def test_devices_on_the_page_get_the_helpers_status(
    api: Api, register: Callable[[Helper], None]
) -> None:
    helper = ScriptedSshHelper()
    register(helper)
    headers = await api.auth()
    older = await _ssh_device(api, headers, "ok-1")
    newer = await _ssh_device(api, headers, "ok-2")
    await make_op(api, headers, older["id"])
    newest_op = await make_op(api, headers, newer["id"])

    # Without update_status nobody is asked.
    r = await api.client.get(OPS, headers=headers)
    assert r.status_code == 200 and helper.seen == []

    # Only the page's devices are refreshed: limit=1 holds only the newest operation.
    r = await api.client.get(OPS, params={"update_status": "true", "limit": 1}, headers=headers)
    assert r.status_code == 200, r.text
    assert [op["id"] for op in r.json()["results"]] == [newest_op["id"]]
    assert [d.id for d in helper.seen] == [newer["id"]]
    refreshed = await _device(api, headers, newer["id"])
    assert refreshed["status"] == "online"
    assert refreshed["last_seen_at"] == "2030-01-02T03:04:05Z"
    assert refreshed["firmware_version"] == "9.9.9"
    untouched = await _device(api, headers, older["id"])
    assert untouched["status"] == "unknown"
    assert untouched["last_seen_at"] is None and untouched["firmware_version"] is None

    # The helper sees the connection with its secret decrypted (the API never shows it).
    view = helper.seen[0]
    assert view.connection["password"] == PASSWORD
    assert view.connection["host"] == "192.0.2.1"
    assert view.name == "ok-2" and view.protocol == "ssh"
    assert PASSWORD not in r.text

    # The by-name twin refreshes the same way.
    r = await api.client.get(
        BY_NAME, params={"update_status": "true", "device_name": "ok-1"}, headers=headers
    )
    assert r.status_code == 200
    assert [d.id for d in helper.seen] == [newer["id"], older["id"]]
    assert (await _device(api, headers, older["id"]))["status"] == "online"


async def test_a_hanging_helper_is_bounded_by_the_timeout(
    api: Api, register: Callable[[Helper], None]
) -> None:
    _configure(api, status_refresh_timeout_s=0.3)
    helper = ScriptedSshHelper()
    register(helper)
    headers = await api.auth()
    hung = await _ssh_device(api, headers, "hang-1")
    stuck = await _ssh_device(api, headers, "stuck-1")
    fine = await _ssh_device(api, headers, "ok-1")
    for device in (hung, stuck, fine):
        await make_op(api, headers, device["id"])

    started = time.monotonic()
    try:
        r = await api.client.get(OPS, params={"update_status": "true"}, headers=headers, timeout=10)
        elapsed = time.monotonic() - started
    finally:
        helper.release.set()
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3
    # It waited for the helper up to the bound, and not much longer: not for a cancelled
    # refresh's slow cleanup either.
    assert 0.3 <= elapsed < 3.0, elapsed
    assert sorted(helper.cancelled) == ["hang-1", "stuck-1"], "hanging refreshes are cancelled"

    for device in (hung, stuck):
        shown = await _device(api, headers, device["id"])
        assert shown["status"] == "offline"
        assert "0.3" in shown["status_detail"], shown["status_detail"]
        assert shown["last_seen_at"] is None
    assert (await _device(api, headers, fine["id"]))["status"] == "online"


async def test_refresh_concurrency_is_bounded(api: Api, register: Callable[[Helper], None]) -> None:
    _configure(api, status_refresh_concurrency=2)
    helper = ScriptedSshHelper(delay=0.05)
    register(helper)
    headers = await api.auth()
    for i in range(6):
        device = await _ssh_device(api, headers, f"slow-{i}")
        await make_op(api, headers, device["id"])

    r = await api.client.get(OPS, params={"update_status": "true"}, headers=headers)
    assert r.status_code == 200
    assert len(helper.seen) == 6
    # Never more than the bound at once, and the bound is used (they do run side by side).
    assert helper.most_at_once == 2
    r = await api.client.get(DEVICES, params={"status": "online"}, headers=headers)
    assert r.json()["count"] == 6


async def test_a_raising_helper_or_no_helper_never_fails_the_request(
    api: Api, register: Callable[[Helper], None]
) -> None:
    helper = ScriptedSshHelper()
    register(helper)
    headers = await api.auth()
    broken = await _ssh_device(api, headers, "boom-1")
    fine = await _ssh_device(api, headers, "ok-1")
    # cwmp has no helper here. Mark it online first, so "unknown" afterwards is the refresh's.
    cpe = await make_device(api, headers, "gw-1", protocol="cwmp")
    tenant_id = await ensure_tenant(api.runtime.db, "acme")
    async with api.runtime.db.write() as conn:
        await device_store.set_status(
            conn,
            tenant_id,
            cpe["id"],
            status="online",
            detail=None,
            seen_at=SEEN,
            firmware_version="1.0",
            now=datetime.now(UTC),
        )
    for device in (broken, fine, cpe):
        await make_op(api, headers, device["id"])

    r = await api.client.get(OPS, params={"update_status": "true"}, headers=headers)
    assert r.status_code == 200, r.text
    assert r.json()["count"] == 3

    failed = await _device(api, headers, broken["id"])
    assert failed["status"] == "offline"
    assert "RuntimeError" in failed["status_detail"]
    assert (await _device(api, headers, fine["id"]))["status"] == "online"
    orphan = await _device(api, headers, cpe["id"])
    assert orphan["status"] == "unknown"
    assert "cwmp" in orphan["status_detail"]
    # What was last known is kept: unknown now, but it was seen then.
    assert orphan["last_seen_at"] == "2030-01-02T03:04:05Z"


async def test_the_helpers_supported_operations_decide_what_post_accepts(
    api: Api, register: Callable[[Helper], None]
) -> None:
    headers = await api.auth()
    box = await _ssh_device(api, headers, "ok-1")
    firmware = {"parameters": {"firmware_version": "2.0"}}

    # Without a helper, ssh's built-in capabilities apply: firmware_update is allowed.
    await make_op(api, headers, box["id"], "firmware_update", **firmware)

    register(ScriptedSshHelper(supported=frozenset({OperationType.REBOOT})))
    r = await api.client.post(
        OPS,
        json={"device_id": box["id"], "operation_type": "firmware_update", **firmware},
        headers=headers,
    )
    body = assert_error(r, 400, {"operation_type"})
    assert "ssh" in body["detail"]
    r = await api.client.post(
        BY_NAME,
        json={"device_name": "ok-1", "operation_type": "firmware_update", **firmware},
        headers=headers,
    )
    assert "ssh" in assert_error(r, 400, {"operation_type"})["detail"]
    await make_op(api, headers, box["id"], "reboot")

    # A helper may also add what the defaults lack.
    api.runtime.registry.unregister("ssh")
    register(ScriptedSshHelper(supported=frozenset(OperationType)))
    op = await make_op(api, headers, box["id"], "factory_reset")
    assert op["operation_type"] == "factory_reset"
