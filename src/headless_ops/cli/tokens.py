"""``headless-ops token create|list|revoke``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from headless_ops.api.runtime import Runtime
from headless_ops.auth import tokens as token_service
from headless_ops.cli.common import make_settings, run_with_runtime
from headless_ops.errors import NotFound
from headless_ops.timeutil import iso, utcnow

__all__ = ["app"]

app = typer.Typer(
    help="API tokens: create (the secret is shown once), list, revoke.", no_args_is_help=True
)
DataDir = Annotated[str | None, typer.Option("--data-dir", envvar="HEADLESS_OPS_DATA_DIR")]


def _duration(text: str) -> timedelta:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if not text or text[-1] not in units or not text[:-1].isdigit():
        raise typer.BadParameter("use a number and a unit: 30d, 12h, 90m")
    return timedelta(seconds=int(text[:-1]) * units[text[-1]])


@app.command("create")
def create(
    name: Annotated[str, typer.Option(help="What the token is for")] = "cli",
    tenant: Annotated[str, typer.Option(help="Tenant name (created when new)")] = "default",
    scope: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "-s",
            help="Repeatable: operations:read, operations:write, "
            "devices:read, devices:write, admin",
        ),
    ] = None,
    expires_in: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d")] = None,
    data_dir: DataDir = None,
) -> None:
    """Create a token and print its secret (shown this once only)."""
    settings = make_settings(data_dir=data_dir)
    scopes = scope or ["admin"]
    expires = utcnow() + _duration(expires_in) if expires_in else None

    async def work(runtime: Runtime) -> tuple[str, str]:
        return await token_service.create_token(
            runtime.db, runtime.hasher, tenant=tenant, name=name, scopes=scopes, expires_at=expires
        )

    try:
        token_id, bearer = run_with_runtime(settings, work)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(f"token id: {token_id}")
    typer.echo(f"token:    {bearer}")
    typer.echo("Keep the token now: it is not stored and cannot be shown again.", err=True)


@app.command("list")
def list_(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's")] = None,
    data_dir: DataDir = None,
) -> None:
    """List tokens (never their secrets)."""
    settings = make_settings(data_dir=data_dir)

    async def work(runtime: Runtime) -> list[token_service.TokenInfo]:
        return await token_service.list_tokens(runtime.db, tenant)

    infos = run_with_runtime(settings, work)
    table = Table("id", "tenant", "name", "scopes", "created", "expires", "revoked")
    for t in infos:
        table.add_row(
            t.id,
            t.tenant,
            t.name,
            " ".join(t.scopes),
            iso(t.created_at) or "",
            iso(t.expires_at) or "-",
            iso(t.revoked_at) or "-",
        )
    Console(width=200).print(table)


@app.command("revoke")
def revoke(token_id: str, data_dir: DataDir = None) -> None:
    """Revoke a token at once."""
    settings = make_settings(data_dir=data_dir)

    async def work(runtime: Runtime) -> None:
        await token_service.revoke_token(runtime.db, token_id)

    try:
        run_with_runtime(settings, work)
    except NotFound as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"revoked {token_id}")
