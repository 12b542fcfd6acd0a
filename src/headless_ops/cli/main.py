"""``headless-ops``: serve, migrate, token, device."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer
from sqlalchemy import func, select

from headless_ops import process
from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import create_token, ensure_tenant
from headless_ops.cli import devices as devices_cli
from headless_ops.cli import tokens as tokens_cli
from headless_ops.cli.common import make_settings
from headless_ops.config import Settings
from headless_ops.logs import configure_logging
from headless_ops.store.migrate import upgrade
from headless_ops.store.schema import api_tokens

__all__ = ["app", "main"]

app = typer.Typer(
    help="headless-ops: schedule and run headless operations on device fleets.",
    no_args_is_help=True,
    add_completion=False,
)
app.add_typer(tokens_cli.app, name="token")
app.add_typer(devices_cli.app, name="device")

Host = Annotated[str | None, typer.Option(envvar="HEADLESS_OPS_HOST", help="Listen address")]
Port = Annotated[int | None, typer.Option(envvar="HEADLESS_OPS_PORT", help="Listen port")]
DataDir = Annotated[
    str | None, typer.Option("--data-dir", envvar="HEADLESS_OPS_DATA_DIR", help="Data directory")
]

DEMO_DEVICES = [
    {
        "id": "dev_67890",
        "name": "demo-gw-1",
        "protocol": "cwmp",
        "connection": {"oui": "202BC1", "product_class": "BM632w", "serial_number": "DEMO0001"},
        "labels": {"site": "demo", "role": "gateway"},
    },
    {
        "id": "dev_67891",
        "name": "demo-gw-2",
        "protocol": "cwmp",
        "connection": {"oui": "202BC1", "product_class": "BM632w", "serial_number": "DEMO0002"},
        "labels": {"site": "demo", "role": "gateway"},
    },
    {
        "id": "dev_67892",
        "name": "demo-router-1",
        "protocol": "ssh",
        # A simulated IOS-like router that serve --demo starts on a free loopback port; it
        # points this entry at it (port, host key, password) at each start.
        "connection": {"host": "127.0.0.1", "port": 2222, "username": "demo", "profile": "ios"},
        "labels": {"site": "demo", "role": "router"},
    },
]


async def _bootstrap(runtime: Runtime, demo: bool) -> str | None:
    """First start: an admin token for tenant ``default``; with ``demo``, the demo devices."""
    token = None
    async with runtime.db.read() as conn:
        existing = (await conn.execute(select(func.count()).select_from(api_tokens))).scalar_one()
    if not existing:
        _, token = await create_token(
            runtime.db, runtime.hasher, tenant="default", name="bootstrap-admin", scopes=["admin"]
        )
    if demo:
        tenant_id = await ensure_tenant(runtime.db, "default")
        for body in DEMO_DEVICES:
            async with runtime.db.read() as conn:
                from headless_ops.store.devices import get_device

                if await get_device(conn, tenant_id, str(body["id"])) is not None:
                    continue
            await runtime.devices.create(tenant_id, runtime.devices.parse_new(body))
    return token


def _serve(settings: Settings, demo: bool, *, scheduler: bool = True) -> None:
    configure_logging(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        upgrade(settings)
    runtime = Runtime.from_settings(settings)
    token = asyncio.run(_bootstrap_and_close(settings, demo))
    base = f"http://{settings.host}:{settings.port}"
    typer.echo(f"headless-ops API:  {base}/api/v1/   docs: {base}/api/docs")
    typer.echo(f"database:          {_safe_url(settings.effective_database_url)}")
    typer.echo(f"data directory:    {settings.data_dir.resolve()}")
    if token:
        typer.echo(f"admin token (shown once, keep it): {token}")
    # The web stack is imported only by the commands that serve (token/device stay quick).
    import uvicorn

    from headless_ops.api.app import BackgroundTask, create_app, run_scheduler
    from headless_ops.cwmp.acs import run_acs

    background: list[BackgroundTask] = [run_scheduler, run_acs] if scheduler else []
    if scheduler and demo:
        from headless_ops.simulator.demo import run_demo_fleet, run_demo_router

        background += [run_demo_fleet, run_demo_router]
    app_ = create_app(runtime, background=background)
    typer.echo(f"scheduler:         {'embedded' if scheduler else 'off (run headless-ops worker)'}")
    if scheduler and settings.cwmp_enabled:
        typer.echo(f"TR-069 ACS:        {settings.cwmp_base_url}{settings.cwmp_path}")
    config = uvicorn.Config(
        app_,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    process.tune_gc()
    uvicorn.Server(config).run()


async def _bootstrap_and_close(settings: Settings, demo: bool) -> str | None:
    runtime = Runtime.from_settings(settings)
    try:
        return await _bootstrap(runtime, demo)
    finally:
        await runtime.close()


def _safe_url(url: str) -> str:
    if "@" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


@app.command()
def serve(
    host: Host = None,
    port: Port = None,
    data_dir: DataDir = None,
    demo: Annotated[bool, typer.Option(help="Also register demo devices")] = False,
) -> None:
    """Run the API (and, as they are built, the scheduler and ACS) in one process."""
    _serve(make_settings(host=host, port=port, data_dir=data_dir), demo)


@app.command()
def api(host: Host = None, port: Port = None, data_dir: DataDir = None) -> None:
    """Run the API alone (scaled out: workers run separately against PostgreSQL)."""
    _serve(make_settings(host=host, port=port, data_dir=data_dir), False, scheduler=False)


@app.command()
def worker(
    data_dir: DataDir = None,
    burst: Annotated[
        bool, typer.Option(help="Run what is due now, then exit (deterministic runs)")
    ] = False,
) -> None:
    """Run the scheduler alone. SIGTERM: stop claiming, let running operations finish within
    the grace period, release the leases of the rest, exit."""
    settings = make_settings(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        upgrade(settings)
    process.tune_gc()
    process.run(_worker(settings, burst))


async def _worker(settings: Settings, burst: bool) -> None:
    import signal

    runtime = Runtime.from_settings(settings)
    try:
        scheduler = runtime.make_scheduler()
        if burst:
            await scheduler.run_until_idle(timeout=24 * 3600)
            return
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"worker {scheduler.worker_id} on {_safe_url(settings.effective_database_url)}")
        await scheduler.run(stop)
    finally:
        await runtime.close()


@app.command()
def acs(data_dir: DataDir = None) -> None:
    """Run the TR-069 ACS alone (CPE sessions on HEADLESS_OPS_CWMP_HOST/_PORT); several
    behind a load balancer share a PostgreSQL database with the workers."""
    settings = make_settings(data_dir=data_dir)
    configure_logging(settings.log_level, settings.log_format)
    if settings.is_sqlite:
        upgrade(settings)
    process.tune_gc()
    process.run(_acs(settings))


async def _acs(settings: Settings) -> None:
    import signal

    from headless_ops.cwmp.acs import run_acs

    runtime = Runtime.from_settings(settings)
    try:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        typer.echo(f"TR-069 ACS: {settings.cwmp_base_url}{settings.cwmp_path}")
        await run_acs(runtime, stop)
    finally:
        await runtime.close()


@app.command()
def simulate(
    acs_url: Annotated[str, typer.Option("--acs", help="The ACS URL CPEs inform")],
    count: Annotated[int, typer.Option(help="How many CPEs")] = 10,
    model: Annotated[str, typer.Option(help="tr098, tr181 or mixed")] = "tr098",
    periodic: Annotated[
        float, typer.Option(help="Periodic inform interval, seconds (0: off)")
    ] = 300.0,
    acs_username: Annotated[str | None, typer.Option(help="CPE credentials at the ACS")] = None,
    acs_password: Annotated[str | None, typer.Option(help="CPE credentials at the ACS")] = None,
    cr_host: Annotated[
        str, typer.Option(help="Address of the CPEs' connection-request listeners")
    ] = "127.0.0.1",
    serial_prefix: Annotated[str, typer.Option(help="Serial numbers are <prefix><n>")] = "SIM",
) -> None:
    """Run a simulated TR-069 CPE fleet against an ACS (real CWMP over HTTP)."""
    from headless_ops.simulator.cli import simulate as run

    run(acs_url, count, model, periodic or None, acs_username, acs_password, cr_host, serial_prefix)


@app.command()
def migrate(data_dir: DataDir = None) -> None:
    """Apply database migrations (SQLite in the data dir, or HEADLESS_OPS_DATABASE_URL)."""
    settings = make_settings(data_dir=data_dir)
    upgrade(settings)
    typer.echo(f"migrated {_safe_url(settings.effective_database_url)}")


def main() -> None:
    """Console-script entry point."""
    app()
