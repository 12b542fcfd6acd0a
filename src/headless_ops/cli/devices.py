"""``headless-ops device add|list|import``."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.cli.common import make_settings, run_with_runtime
from headless_ops.errors import HeadlessOpsError
from headless_ops.store.devices import DeviceFilter

__all__ = ["app", "row_to_device"]

app = typer.Typer(help="The device inventory.", no_args_is_help=True)
DataDir = Annotated[str | None, typer.Option("--data-dir", envvar="HEADLESS_OPS_DATA_DIR")]
Tenant = Annotated[str, typer.Option(help="Tenant name")]

_TOP = {"id", "name", "protocol", "maintenance_window", "labels", "connection"}


def _describe(exc: HeadlessOpsError) -> str:
    if exc.errors:
        return "; ".join(f"{e.field or '(body)'}: {e.message}" for e in exc.errors)
    return exc.message


def row_to_device(row: dict[str, Any]) -> dict[str, Any]:
    """A device body from a CSV or JSON row.

    Connection fields may be given flat (``host``, ``port`` …) or as ``connection.host``;
    CSV ``labels`` is ``key=value;key=value``; empty CSV cells are absent values.
    """
    out: dict[str, Any] = {}
    connection: dict[str, Any] = dict(row.get("connection") or {})
    for key, value in row.items():
        if key is None or value is None or value == "" or key == "connection":
            continue
        if key == "labels" and isinstance(value, str):
            labels = {}
            for part in value.split(";"):
                k, sep, v = part.partition("=")
                if part.strip():
                    labels[k.strip()] = v.strip() if sep else ""
            out["labels"] = labels
        elif key in _TOP:
            out[key] = value
        else:
            name = key.removeprefix("connection.")
            if name == "port" and isinstance(value, str) and value.isdigit():
                value = int(value)
            connection[name] = value
    out["connection"] = connection
    return out


def _read_rows(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and "devices" in data:
            data = data["devices"]
        if not isinstance(data, list):
            raise typer.BadParameter("a JSON import is a list of devices")
        return [r if isinstance(r, dict) else {"__invalid__": r} for r in data]
    return list(csv.DictReader(io.StringIO(text)))


@app.command("add")
def add(
    name: str,
    protocol: Annotated[str, typer.Option(help="cwmp or ssh")],
    connection: Annotated[
        list[str] | None, typer.Option("--set", "-c", help="Connection field key=value, repeatable")
    ] = None,
    label: Annotated[list[str] | None, typer.Option("--label", "-l", help="key=value")] = None,
    device_id: Annotated[str | None, typer.Option("--id")] = None,
    maintenance_window: Annotated[str | None, typer.Option()] = None,
    tenant: Tenant = "default",
    data_dir: DataDir = None,
) -> None:
    """Add one device."""
    row: dict[str, Any] = {"name": name, "protocol": protocol}
    if device_id:
        row["id"] = device_id
    if maintenance_window:
        row["maintenance_window"] = maintenance_window
    for item in connection or []:
        key, _, value = item.partition("=")
        row[key] = value
    if label:
        row["labels"] = ";".join(label)
    settings = make_settings(data_dir=data_dir)

    async def work(runtime: Runtime) -> str:
        tenant_id = await ensure_tenant(runtime.db, tenant)
        body = row_to_device(row)
        record = await runtime.devices.create(tenant_id, runtime.devices.parse_new(body))
        return record.id

    try:
        device_id = run_with_runtime(settings, work)
    except HeadlessOpsError as exc:
        typer.echo(f"error: {_describe(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(device_id)


@app.command("list")
def list_(tenant: Tenant = "default", data_dir: DataDir = None) -> None:
    """List a tenant's devices."""
    settings = make_settings(data_dir=data_dir)

    async def work(runtime: Runtime) -> list[Any]:
        tenant_id = await ensure_tenant(runtime.db, tenant)
        _, page = await runtime.devices.list(tenant_id, DeviceFilter(), 100_000, 0)
        return page

    table = Table("id", "name", "protocol", "status", "firmware", "labels")
    for d in run_with_runtime(settings, work):
        labels = ",".join(f"{k}={v}" for k, v in d.labels.items())
        table.add_row(d.id, d.name, d.protocol, d.status, d.firmware_version or "-", labels)
    Console(width=200).print(table)


@app.command("import")
def import_(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="CSV or JSON file")],
    tenant: Tenant = "default",
    data_dir: DataDir = None,
) -> None:
    """Import devices from CSV or JSON; every bad row is reported and the rest are added."""
    rows = _read_rows(path)
    settings = make_settings(data_dir=data_dir)

    async def work(runtime: Runtime) -> tuple[int, list[str]]:
        tenant_id = await ensure_tenant(runtime.db, tenant)
        added, problems = 0, []
        for number, row in enumerate(rows, start=2 if path.suffix.lower() != ".json" else 1):
            where = f"row {number}" if path.suffix.lower() != ".json" else f"item {number}"
            if "__invalid__" in row:
                problems.append(f"{where}: not an object")
                continue
            try:
                body = row_to_device(row)
                await runtime.devices.create(tenant_id, runtime.devices.parse_new(body))
                added += 1
            except HeadlessOpsError as exc:
                problems.append(f"{where}: {_describe(exc)}")
        return added, problems

    added, problems = run_with_runtime(settings, work)
    for problem in problems:
        typer.echo(problem, err=True)
    typer.echo(f"imported {added} device(s), {len(problems)} row(s) refused")
    if problems:
        raise typer.Exit(1)
