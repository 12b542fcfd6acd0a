"""A real server for schemathesis: uvicorn on a loopback socket, in a thread of its own.

schemathesis drives the API synchronously (``requests``), so the server cannot share the
test's event loop: it runs in a background thread with its own loop, on a database seeded
with a few devices, operations, a maintenance window and tokens (admin, and two with one
narrow scope each).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from cryptography.fernet import Fernet

from headless_ops.api.app import create_app
from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import create_token, ensure_tenant
from headless_ops.config import Settings
from headless_ops.crypto import load_keys
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.services.devices import NewDevice
from headless_ops.services.requests import NewOperation
from headless_ops.services.windows import NewWindow
from headless_ops.store.db import Database

__all__ = ["SEED_DEVICES", "SEED_WINDOW", "LiveServer", "openapi_document"]

#: Seeded devices of tenant ``acme``. ``dev_67892``/``gw-0001`` are the ids the OpenAPI
#: examples use, so schemathesis' examples phase reaches the 201 paths too.
SEED_DEVICES: list[dict[str, Any]] = [
    {
        "id": "dev_67892",
        "name": "gw-0001",
        "protocol": "cwmp",
        "connection": {"oui": "202BC1", "product_class": "BM632w", "serial_number": "S0001"},
        "labels": {"site": "lab"},
    },
    {
        "id": "dev_ssh_1",
        "name": "router-1",
        "protocol": "ssh",
        "connection": {"host": "127.0.0.1", "port": 2222, "username": "ops", "password": "pw"},
    },
]


#: A maintenance window of tenant ``acme``, for the ``/maintenance_window/{name}/`` routes.
SEED_WINDOW: dict[str, Any] = {
    "name": "nightly",
    "timezone": "UTC",
    "cron": "0 2 * * *",
    "duration_minutes": 120,
}


def _keys() -> dict[str, str]:
    return {"secret_keys": Fernet.generate_key().decode(), "token_hash_key": "schemathesis-key"}


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document, built without serving (for collection time).

    The runtime is never used to serve: its database engines are created but never connect.
    """
    with tempfile.TemporaryDirectory(prefix="headless-ops-openapi-") as tmp:
        settings = Settings(data_dir=Path(tmp), **_keys())
        box, hasher = load_keys(settings)
        runtime = Runtime(settings, Database(settings), box, hasher, HelperRegistry())
        return create_app(runtime).openapi()


@dataclass
class LiveServer:
    """``start()`` serves the app on 127.0.0.1 (ephemeral port); ``stop()`` shuts it down."""

    settings: Settings
    base_url: str = ""
    #: ``Authorization`` header value of an ``admin`` token of tenant ``acme``.
    bearer: str = ""
    #: ``Authorization`` values of tokens with one narrow scope each (``operations:read``,
    #: ``devices:read``): every secured operation is a 403 for at least one of them.
    narrow_bearers: list[str] = field(default_factory=list)
    #: Seeded operation ids: ``scheduled`` (can be cancelled) and ``cancelled`` (409).
    operations: dict[str, str] = field(default_factory=dict)
    _thread: threading.Thread | None = None
    _server: uvicorn.Server | None = None
    _ready: threading.Event = field(default_factory=threading.Event)
    _error: BaseException | None = None

    @staticmethod
    def settings_for(data_dir: Path, database_url: str = "") -> Settings:
        """Settings for a server on ``database_url`` (empty: SQLite in ``data_dir``)."""
        # No scheduler runs in this server, so there is nothing to drain on shutdown.
        return Settings(data_dir=data_dir, database_url=database_url, shutdown_grace_s=0, **_keys())

    def start(self, timeout: float = 60) -> None:
        """Seed the database, start serving and wait until the socket accepts."""
        self._thread = threading.Thread(target=self._run, name="schemathesis-server", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the server did not start in time")
        if self._error is not None:
            raise RuntimeError("the server failed to start") from self._error

    def stop(self) -> None:
        """Ask uvicorn to exit and wait for the thread (lifespan closes the runtime)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)
            if self._thread.is_alive():
                raise RuntimeError("the server thread did not stop")

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported to start() instead of dying silently
            self._error = exc
            self._ready.set()

    async def _seed(self, runtime: Runtime) -> None:
        async def bearer(*scopes: str) -> str:
            _, value = await create_token(
                runtime.db, runtime.hasher, tenant="acme", name="schemathesis", scopes=[*scopes]
            )
            return f"Bearer {value}"

        self.bearer = await bearer("admin")
        self.narrow_bearers = [await bearer("operations:read"), await bearer("devices:read")]
        tenant = await ensure_tenant(runtime.db, "acme")
        await runtime.windows.create(tenant, NewWindow.model_validate(SEED_WINDOW))
        for body in SEED_DEVICES:
            await runtime.devices.create(tenant, NewDevice.model_validate(body))
        waiting = await runtime.operations.create(
            tenant, NewOperation(device_id="dev_67892", operation_type="reboot")
        )
        finished = await runtime.operations.create(
            tenant,
            NewOperation(
                device_id="dev_ssh_1",
                operation_type="firmware_update",
                parameters={"firmware_version": "2.0.1"},
            ),
        )
        await runtime.operations.cancel(tenant, finished.view.op.id)
        self.operations = {"scheduled": waiting.view.op.id, "cancelled": finished.view.op.id}

    async def _serve(self) -> None:
        box, hasher = load_keys(self.settings)
        runtime = Runtime(self.settings, Database(self.settings), box, hasher, HelperRegistry())
        await self._seed(runtime)
        app = create_app(runtime)
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, log_config=None, lifespan="on", access_log=False
        )
        self._server = server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        self.base_url = f"http://127.0.0.1:{port}"
        self._ready.set()
        await task
