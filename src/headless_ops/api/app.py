"""The ASGI application: routers under ``/api/v1``, error handlers, OpenAPI and docs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel

from headless_ops import __version__
from headless_ops.api import (
    routes_backups,
    routes_devices,
    routes_firmware,
    routes_health,
    routes_metrics,
    routes_operations,
    routes_templates,
    routes_windows,
)
from headless_ops.api.errors import install_error_handlers
from headless_ops.api.limits import BodyLimitMiddleware, NulInUrlMiddleware
from headless_ops.api.runtime import Runtime

__all__ = ["API_PREFIX", "create_app"]

API_PREFIX = "/api/v1"
log = structlog.get_logger(__name__)

#: Things to run beside the API while it serves (the scheduler, the ACS …); each gets the
#: runtime and an event set when the server stops, and should return soon after it.
BackgroundTask = Callable[[Runtime, asyncio.Event], Coroutine[Any, Any, None]]


async def run_scheduler(runtime: Runtime, stop: asyncio.Event) -> None:
    """The embedded scheduler (``serve``): runs until the server stops, then drains."""
    await runtime.make_scheduler().run(stop)


async def _purge_loop(runtime: Runtime, stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            purged = await runtime.operations.purge_idempotency_keys()
            if purged:
                log.info("idempotency keys purged", count=purged)
        except Exception:
            log.exception("idempotency purge failed")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=3600)


def create_app(
    runtime: Runtime,
    *,
    background: list[BackgroundTask] | None = None,
    close_runtime: bool = True,
) -> FastAPI:
    """Build the app around ``runtime``; ``background`` tasks run for the app's lifetime."""
    tasks_to_run: list[BackgroundTask] = [_purge_loop, *(background or [])]

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        tasks = [asyncio.create_task(task(runtime, stop)) for task in tasks_to_run]
        try:
            yield
        finally:
            stop.set()
            # Let each finish its own way (the scheduler drains), then cancel what lingers.
            grace = runtime.settings.shutdown_grace_s + 5
            await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            if close_runtime:
                await runtime.close()

    app = FastAPI(
        title="headless-ops",
        version=__version__,
        description="Inventory Device Headless Operation API: schedule and monitor firmware "
        "updates, configuration sync, backups, reboots and TR-069 parameter operations.",
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url="/api/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_error_handlers(app)
    app.include_router(routes_operations.by_id_router, prefix=API_PREFIX)
    app.include_router(routes_operations.by_name_router, prefix=API_PREFIX)
    app.include_router(routes_devices.router, prefix=API_PREFIX)
    app.include_router(routes_windows.router, prefix=API_PREFIX)
    app.include_router(routes_firmware.router, prefix=API_PREFIX)
    app.include_router(routes_templates.router, prefix=API_PREFIX)
    app.include_router(routes_backups.router, prefix=API_PREFIX)
    app.include_router(routes_health.router)
    app.include_router(routes_metrics.router)
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=runtime.settings.max_body_bytes,
        overrides=((f"{API_PREFIX}/firmware/", runtime.settings.firmware_max_bytes),),
    )
    app.add_middleware(NulInUrlMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _honest_openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


_CHALLENGE = {
    "required": True,
    "description": 'The RFC 6750 challenge: `Bearer realm="headless-ops"`, plus '
    '`error="invalid_token"` when a token was sent',
    "schema": {"type": "string"},
}


def _honest_openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document made true to what the server answers.

    Minus the 422 FastAPI claims for validation (this API answers 400); plus the
    ``WWW-Authenticate`` header of every 401 and the 400 of the NUL guard.
    """
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes
    )
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.get("responses", {})
            bad = responses.get("422", {})
            ref = str(bad.get("content", {}).get("application/json", {}).get("schema", {}))
            if "HTTPValidationError" in ref:
                del responses["422"]
            if "401" in responses:
                # Every 401 carries the challenge (api/errors.py), as RFC 6750 requires.
                responses["401"].setdefault("headers", {})["WWW-Authenticate"] = _CHALLENGE
            if operation.get("parameters") and "400" not in responses:
                # NulInUrlMiddleware answers 400 to any path or query value holding U+0000.
                responses["400"] = {
                    "description": "A path or query value holds the NUL character (%00)",
                    "content": {
                        "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
                    },
                }
                operation["responses"] = dict(sorted(responses.items()))
    components = schema.get("components", {}).get("schemas", {})
    components.pop("HTTPValidationError", None)
    components.pop("ValidationError", None)
    # Schemas referenced by requestBodies given through openapi_extra.
    from headless_ops.domain.operations import PARAMETER_MODELS
    from headless_ops.services.devices import DeviceUpdate, NewDevice
    from headless_ops.services.windows import NewWindow, WindowUpdate

    models: list[type[BaseModel]] = [
        NewDevice,
        DeviceUpdate,
        NewWindow,
        WindowUpdate,
        *PARAMETER_MODELS.values(),
    ]
    for model in models:
        sub = model.model_json_schema(ref_template="#/components/schemas/{model}")
        for name, definition in sub.pop("$defs", {}).items():
            components.setdefault(name, definition)
        components.setdefault(model.__name__, sub)
    return schema
