"""The ACS's tables: CPEs by device key, and the jobs sessions run (SQL only, no policy)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, insert, literal_column, select, update

from headless_ops.store.db import Database
from headless_ops.store.schema import cwmp_devices, cwmp_jobs, device_serial, devices, operations
from headless_ops.timeutil import iso

__all__ = ["CwmpStore", "JobState"]

d = cwmp_devices.c
j = cwmp_jobs.c


class JobState:
    """States of a job (plain strings in the table)."""

    QUEUED = "queued"
    STARTED = "started"
    WAITING = "waiting"
    DONE = "done"


class CwmpStore:
    """Reads and writes of the CWMP tables."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- CPEs --------------------------------------------------------------------------

    async def device(self, device_key: str) -> Any:
        """The CPE known by ``device_key``, or None."""
        async with self.db.lookup() as conn:
            return (
                await conn.execute(select(cwmp_devices).where(d.device_key == device_key))
            ).first()

    async def device_of(self, tenant_id: str, device_id: str) -> Any:
        """The CPE row of an inventory device, or None (it never informed)."""
        async with self.db.lookup() as conn:
            return (
                await conn.execute(
                    select(cwmp_devices).where(d.tenant_id == tenant_id, d.device_id == device_id)
                )
            ).first()

    async def reported(self, tenant_id: str, device_ids: list[str]) -> dict[str, dict[str, Any]]:
        """What the CPEs among ``device_ids`` last reported, by device id (API view)."""
        if not device_ids:
            return {}
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(cwmp_devices).where(
                        d.tenant_id == tenant_id, d.device_id.in_(device_ids)
                    )
                )
            ).all()
        return {
            r.device_id: {
                "software_version": r.software_version,
                "hardware_version": r.hardware_version,
                "uptime_s": r.uptime_s,
                "data_model": r.root,
                "connection_request_url": r.connection_request_url,
                "last_inform_at": iso(r.last_inform_at),
                "last_events": r.last_events,
            }
            for r in rows
        }

    async def find_inventory_device(self, oui: str, product_class: str, serial: str) -> Any:
        """An inventory device (any tenant) created for this identity before it ever informed.

        Found by its serial number through an index (``ix_devices_cwmp_serial``); only CWMP
        devices no CPE is bound to yet, whose OUI and product class, when given, match.
        """
        bound = select(d.device_key).where(
            d.tenant_id == devices.c.tenant_id, d.device_id == devices.c.id
        )
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(devices.c.tenant_id, devices.c.id, devices.c.connection)
                    .where(device_serial == serial, devices.c.protocol == "cwmp", ~bound.exists())
                    .order_by(devices.c.created_at, devices.c.tenant_id, devices.c.id)
                )
            ).all()
        for row in rows:
            c = row.connection or {}
            if (
                str(c.get("serial_number", "")) == serial
                and str(c.get("oui", "")).upper() in ("", oui.upper())
                and str(c.get("product_class", "")) in ("", product_class)
            ):
                return row
        return None

    async def bind_device(
        self,
        *,
        device_key: str,
        tenant_id: str,
        device_id: str,
        oui: str,
        product_class: str,
        serial_number: str,
        manufacturer: str | None,
        now: datetime,
    ) -> None:
        """Remember which inventory device a device key is (first contact)."""
        async with self.db.write() as conn:
            exists = (
                await conn.execute(select(d.device_key).where(d.device_key == device_key))
            ).first()
            if exists is not None:
                return
            # The inventory device may have been bound to an earlier key (serial re-used).
            await conn.execute(
                delete(cwmp_devices).where(d.tenant_id == tenant_id, d.device_id == device_id)
            )
            await conn.execute(
                insert(cwmp_devices).values(
                    device_key=device_key,
                    tenant_id=tenant_id,
                    device_id=device_id,
                    oui=oui,
                    product_class=product_class,
                    serial_number=serial_number,
                    manufacturer=manufacturer,
                    created_at=now,
                )
            )

    async def record_inform(
        self,
        device_key: str,
        tenant_id: str,
        device_id: str,
        values: dict[str, Any],
        *,
        now: datetime,
        firmware_version: str | None,
    ) -> None:
        """What an Inform told: the CPE row, and the inventory device's status."""
        async with self.db.write() as conn:
            await conn.execute(
                update(cwmp_devices).where(d.device_key == device_key).values(**values)
            )
            device_values: dict[str, Any] = {
                "status": "online",
                "status_detail": None,
                "last_seen_at": now,
                "updated_at": now,
            }
            if firmware_version:
                device_values["firmware_version"] = firmware_version
            await conn.execute(
                update(devices)
                .where(devices.c.tenant_id == tenant_id, devices.c.id == device_id)
                .values(**device_values)
            )

    async def record_seen(self, seen: list[dict[str, Any]], now: datetime) -> None:
        """Many routine Informs in one transaction: last seen, uptime, online (write-behind
        of periodic Informs that changed nothing else)."""
        if not seen:
            return
        async with self.db.write() as conn:
            await conn.execute(
                update(cwmp_devices)
                .where(d.device_key == bindparam("b_key"))
                .values(
                    last_inform_at=bindparam("b_at"),
                    uptime_s=bindparam("b_uptime"),
                    last_events=bindparam("b_events"),
                ),
                [
                    {
                        "b_key": x["device_key"],
                        "b_at": x["at"],
                        "b_uptime": x.get("uptime_s"),
                        "b_events": x.get("last_events"),
                    }
                    for x in seen
                ],
            )
            await conn.execute(
                update(devices)
                .where(
                    devices.c.tenant_id == bindparam("b_tenant"), devices.c.id == bindparam("b_id")
                )
                .values(
                    status="online",
                    status_detail=None,
                    last_seen_at=bindparam("b_at"),
                    updated_at=now,
                ),
                [
                    {"b_tenant": x["tenant_id"], "b_id": x["device_id"], "b_at": x["at"]}
                    for x in seen
                ],
            )

    async def deferred_devices(self) -> set[tuple[str, str]]:
        """Every ``(tenant, device)`` with operations waiting for it to show up (a scan of
        the small partial index of such operations)."""
        o = operations.c
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(o.tenant_id, o.device_id)
                # Spelled as the partial index's own condition, so that it is used.
                .where(
                    o.status == literal_column("'pending'"),
                    o.wait_reason == literal_column("'device_unreachable'"),
                )
                .distinct()
            )
            return {(r.tenant_id, r.device_id) for r in rows.all()}

    # -- jobs --------------------------------------------------------------------------

    async def put_job(self, values: dict[str, Any]) -> None:
        """Queue a job (replacing a leftover of the same attempt)."""
        async with self.db.write() as conn:
            await conn.execute(
                delete(cwmp_jobs).where(
                    j.operation_id == values["operation_id"], j.attempt == values["attempt"]
                )
            )
            await conn.execute(insert(cwmp_jobs).values(**values))

    async def job(self, operation_id: str, attempt: int) -> Any:
        """One job, or None."""
        async with self.db.lookup() as conn:
            return (
                await conn.execute(
                    select(cwmp_jobs).where(j.operation_id == operation_id, j.attempt == attempt)
                )
            ).first()

    async def job_by(self, *, command_key: str | None = None, token: str | None = None) -> Any:
        """The job of a CommandKey or of a transfer token, or None."""
        cond = (
            j.command_key == command_key if command_key is not None else j.transfer_token == token
        )
        async with self.db.lookup() as conn:
            return (await conn.execute(select(cwmp_jobs).where(cond))).first()

    async def queued_keys(self) -> set[str]:
        """The device keys with queued jobs (the table holds only jobs in flight)."""
        async with self.db.read() as conn:
            rows = await conn.execute(
                select(j.device_key).where(j.state == JobState.QUEUED).distinct()
            )
            return {r.device_key for r in rows.all()}

    async def jobs(self, device_key: str, state: str) -> list[Any]:
        """A CPE's jobs in ``state``, highest priority (lowest number) first."""
        async with self.db.lookup() as conn:
            rows = await conn.execute(
                select(cwmp_jobs)
                .where(j.device_key == device_key, j.state == state)
                .order_by(j.priority, j.created_at)
            )
            return list(rows.all())

    async def transition(
        self,
        operation_id: str,
        attempt: int,
        *,
        from_states: tuple[str, ...],
        now: datetime,
        **values: Any,
    ) -> bool:
        """Move a job on, only from one of ``from_states`` (so two sessions cannot both take
        it, and a finished one is never reopened); True when it moved."""
        async with self.db.write() as conn:
            result = await conn.execute(
                update(cwmp_jobs)
                .where(
                    and_(
                        j.operation_id == operation_id,
                        j.attempt == attempt,
                        j.state.in_(from_states),
                    )
                )
                .values(updated_at=now, **values)
            )
            return bool(result.rowcount)

    async def drop_job(self, operation_id: str, attempt: int) -> None:
        """Forget a job (its operation was deferred or has ended)."""
        async with self.db.write() as conn:
            await conn.execute(
                delete(cwmp_jobs).where(j.operation_id == operation_id, j.attempt == attempt)
            )
