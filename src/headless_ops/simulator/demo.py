"""The demo fleet of ``serve --demo``: simulated gateways informing the embedded ACS, bound
to the demo inventory devices, and a firmware image for them in the repository — so a
newcomer's first ``firmware_update`` completes within seconds; and a simulated IOS-like
router over SSH, so that the SSH helper's operations can be tried as well."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import structlog

from headless_ops.simulator.cpe import CpeConfig, SimulatedCpe

if TYPE_CHECKING:
    from headless_ops.api.runtime import Runtime

__all__ = [
    "DEMO_FIRMWARE_VERSION",
    "DEMO_GATEWAYS",
    "DEMO_ROUTER_ID",
    "run_demo_fleet",
    "run_demo_router",
]

log = structlog.get_logger(__name__)

#: (serial number, data model) of the simulated gateways; the serials are those of the demo
#: inventory devices, which the ACS binds them to on their first Inform.
DEMO_GATEWAYS = [("DEMO0001", "tr098"), ("DEMO0002", "tr098")]
DEMO_FIRMWARE_VERSION = "2.0.0"
#: The demo inventory's SSH router (``cli/main.py``'s DEMO_DEVICES).
DEMO_ROUTER_ID = "dev_67892"


async def _chunks(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _demo_firmware(runtime: Runtime) -> None:
    from headless_ops.auth.tokens import ensure_tenant
    from headless_ops.errors import Conflict

    tenant_id = await ensure_tenant(runtime.db, "default")
    if await runtime.firmware.find(tenant_id, DEMO_FIRMWARE_VERSION, "BM632w") is not None:
        return
    image = (
        f"VERSION={DEMO_FIRMWARE_VERSION}\ndemo firmware image for simulated gateways\n".encode()
    )
    with contextlib.suppress(Conflict):
        await runtime.firmware.add(
            tenant_id,
            version=DEMO_FIRMWARE_VERSION,
            product_class="BM632w",
            filename=f"bm632w-{DEMO_FIRMWARE_VERSION}.bin",
            sha256=None,
            description="demo image (serve --demo)",
            chunks=_chunks(image),
        )


async def _wait_listening(host: str, port: int, timeout_s: float = 15.0) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def run_demo_fleet(runtime: Runtime, stop: asyncio.Event) -> None:
    """Run the demo gateways until the server stops."""
    settings = runtime.settings
    if not settings.cwmp_enabled:
        return
    host = "127.0.0.1" if settings.cwmp_host in ("0.0.0.0", "::", "") else settings.cwmp_host
    if not await _wait_listening(host, settings.cwmp_port):
        log.warning("demo fleet not started: the ACS is not listening")
        return
    await _demo_firmware(runtime)
    url = f"http://{host}:{settings.cwmp_port}{settings.cwmp_path}"
    cpes = [
        SimulatedCpe(
            CpeConfig(
                acs_url=url,
                serial_number=serial,
                model=model,
                oui="202BC1",
                product_class="BM632w",
                software_version="1.0.0",
                periodic_inform_s=300.0,
                reboot_s=2.0,
                acs_username=settings.cwmp_username or None,
                acs_password=settings.cwmp_password or None,
            )
        )
        for serial, model in DEMO_GATEWAYS
    ]
    try:
        for cpe in cpes:
            await cpe.start(bootstrap=True)
        log.info("demo fleet informing", acs=url, cpes=len(cpes))
        await stop.wait()
    finally:
        for cpe in cpes:
            await cpe.close()


async def run_demo_router(runtime: Runtime, stop: asyncio.Event) -> None:
    """Serve the demo router until the server stops: a simulated IOS-like device (no shell)
    on a free loopback port, with a fresh host key and password at each start. Its inventory
    entry is pointed at it (port, pinned host key, password), unless it was deleted or is no
    longer an SSH device (the demo leaves an operator's own changes alone)."""
    from headless_ops.auth.tokens import ensure_tenant
    from headless_ops.errors import NotFound
    from headless_ops.simulator.ssh_device import FakeDevice

    devices = runtime.devices
    tenant_id = await ensure_tenant(runtime.db, "default")
    try:
        record = await devices.get(tenant_id, DEMO_ROUTER_ID)
    except NotFound:
        return
    if record.protocol != "ssh" or record.connection.get("host") != "127.0.0.1":
        return
    password = secrets.token_urlsafe(18)
    router = FakeDevice(
        runtime.settings.data_dir / "demo-router",
        kind="ios",
        username=str(record.connection.get("username") or "demo"),
        password=password,
        hostname="demo-router-1",
        version="15.7(3)M8",
        reboot_s=2.0,
    )
    await router.start("127.0.0.1", 0)
    try:
        change = {
            "port": router.port,
            "host_key": router.host_key_openssh,
            "password": password,
            "profile": "ios",
        }
        try:
            await devices.update(
                tenant_id, DEMO_ROUTER_ID, devices.parse_update({"connection": change})
            )
        except Exception:
            log.exception("demo router not registered: its operations will fail")
            return
        log.info("demo router listening", port=router.port, device_id=DEMO_ROUTER_ID)
        await stop.wait()
    finally:
        await router.close()
