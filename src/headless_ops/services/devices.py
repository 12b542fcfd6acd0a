"""Device inventory use cases: secrets sealed on the way in, never returned."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from headless_ops.crypto import SecretBox
from headless_ops.domain.devices import (
    CONNECTION_MODELS,
    DeviceStatus,
    Protocol,
    split_connection,
    validate_connection,
    validate_labels,
)
from headless_ops.domain.operations import field_errors
from headless_ops.errors import Conflict, FieldError, InvalidInput, NotFound
from headless_ops.helpers.base import DeviceView
from headless_ops.ids import new_id
from headless_ops.services.requests import WindowName
from headless_ops.store import devices as device_store
from headless_ops.store import operations as op_store
from headless_ops.store.db import Database
from headless_ops.store.records import DeviceRecord
from headless_ops.store.schema import maintenance_windows
from headless_ops.timeutil import utcnow

__all__ = ["DeviceService", "DeviceUpdate", "NewDevice", "device_view"]

_DEVICE_ID = r"^dev_[A-Za-z0-9_-]{1,76}$"


class NewDevice(BaseModel):
    """``{"id": "dev_67892", "name": "gw-0001", "protocol": "ssh", "connection": {…}, "labels": {…}}``"""

    model_config = ConfigDict(extra="forbid", strict=True)

    id: Annotated[StrictStr, Field(pattern=_DEVICE_ID)] | None = None
    name: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    protocol: Annotated[Protocol, Field(strict=False)]
    connection: dict[str, Any] = Field(default_factory=dict)
    labels: dict[str, StrictStr] = Field(default_factory=dict)
    maintenance_window: WindowName | None = None


class DeviceUpdate(BaseModel):
    """A partial update: only the fields sent change. ``connection`` fields merge; a secret
    sent as ``null`` is removed."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: Annotated[StrictStr, Field(min_length=1, max_length=128)] | None = None
    connection: dict[str, Any] | None = None
    labels: dict[str, StrictStr] | None = None
    maintenance_window: WindowName | None = None


def device_view(record: DeviceRecord, box: SecretBox) -> DeviceView:
    """What a helper needs: public and decrypted secret connection fields together."""
    connection = dict(record.connection)
    connection.update(box.open(record.secrets))
    return DeviceView(
        tenant_id=record.tenant_id,
        id=record.id,
        name=record.name,
        protocol=record.protocol,
        connection=connection,
        labels=dict(record.labels),
        firmware_version=record.firmware_version,
    )


def secret_fields_set(record: DeviceRecord, box: SecretBox) -> list[str]:
    """Names (never values) of the secrets stored for a device."""
    return sorted(box.open(record.secrets))


def _check_name(name: str) -> None:
    if name != name.strip() or not re.match(r"^[^\x00-\x1f\x7f]+$", name):
        raise InvalidInput(
            "invalid device", [FieldError("name", "must be printable, without surrounding spaces")]
        )


async def _check_window(conn: AsyncConnection, tenant_id: str, name: str) -> None:
    mw = maintenance_windows.c
    query = select(mw.name).where(mw.tenant_id == tenant_id, mw.name == name)
    if (await conn.execute(query)).first() is None:
        raise InvalidInput(
            "unknown maintenance window",
            [FieldError("maintenance_window", f"no maintenance window is named {name!r}")],
        )


@dataclass
class DeviceService:
    """Inventory use cases."""

    db: Database
    box: SecretBox
    clock: Callable[[], datetime] = utcnow
    #: Further checks of a validated connection, by protocol (an SSH device's profile must
    #: exist); each raises InvalidInput.
    connection_checks: dict[str, Callable[[dict[str, Any]], None]] = field(default_factory=dict)
    #: Called with (tenant, device id) once a change or deletion of a device is committed:
    #: caches of this process (the ACS's credentials) drop the device at once.
    changed: list[Callable[[str, str], None]] = field(default_factory=list)

    def _notify_changed(self, tenant_id: str, device_id: str) -> None:
        for listener in self.changed:
            listener(tenant_id, device_id)

    def _check_connection(self, protocol: str, connection: dict[str, Any]) -> None:
        check = self.connection_checks.get(protocol)
        if check is not None:
            check(connection)

    @staticmethod
    def parse_new(payload: object) -> NewDevice:
        """Validate a create body."""
        if not isinstance(payload, dict):
            raise InvalidInput(
                "the device must be a JSON object", [FieldError("", "expected an object")]
            )
        try:
            return NewDevice.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput("invalid device", field_errors(exc)) from None

    @staticmethod
    def parse_update(payload: object) -> DeviceUpdate:
        """Validate a PATCH body."""
        if not isinstance(payload, dict):
            raise InvalidInput(
                "the update must be a JSON object", [FieldError("", "expected an object")]
            )
        try:
            return DeviceUpdate.model_validate(payload)
        except ValidationError as exc:
            raise InvalidInput("invalid device update", field_errors(exc)) from None

    async def create(self, tenant_id: str, new: NewDevice) -> DeviceRecord:
        """Store a device; Conflict when its id or name is taken in the tenant."""
        _check_name(new.name)
        connection = validate_connection(new.protocol, new.connection)
        self._check_connection(new.protocol.value, connection)
        labels = validate_labels(new.labels)
        public, secret = split_connection(new.protocol, connection)
        now = self.clock()
        device_id = new.id or new_id("dev", 10)
        values = {
            "tenant_id": tenant_id,
            "id": device_id,
            "name": new.name,
            "protocol": new.protocol.value,
            "connection": public,
            "secrets": self.box.seal(secret),
            "labels": labels,
            "maintenance_window": new.maintenance_window,
            "status": DeviceStatus.UNKNOWN.value,
            "status_detail": None,
            "last_seen_at": None,
            "firmware_version": None,
            "created_at": now,
            "updated_at": now,
        }
        try:
            async with self.db.write() as conn:
                if await device_store.get_device(conn, tenant_id, device_id) is not None:
                    raise Conflict(
                        f"device {device_id} already exists",
                        [FieldError("id", f"{device_id!r} is already taken in this tenant")],
                    )
                if await device_store.get_device_by_name(conn, tenant_id, new.name) is not None:
                    raise Conflict(
                        f"a device named {new.name!r} already exists",
                        [FieldError("name", f"{new.name!r} is already taken in this tenant")],
                    )
                if new.maintenance_window is not None:
                    await _check_window(conn, tenant_id, new.maintenance_window)
                await device_store.insert_device(conn, values)
        except IntegrityError:
            raise Conflict(f"device {device_id} or name {new.name!r} already exists") from None
        return DeviceRecord(**values)  # type: ignore[arg-type]

    async def get(self, tenant_id: str, device_id: str) -> DeviceRecord:
        """One device; NotFound for another tenant's."""
        async with self.db.read() as conn:
            record = await device_store.get_device(conn, tenant_id, device_id)
        if record is None:
            raise NotFound(f"device {device_id} does not exist")
        return record

    async def list(
        self, tenant_id: str, flt: device_store.DeviceFilter, limit: int, offset: int
    ) -> tuple[int, list[DeviceRecord]]:
        """``(count, page)`` by name."""
        async with self.db.read() as conn:
            return await device_store.list_devices(conn, tenant_id, flt, limit, offset)

    async def update(self, tenant_id: str, device_id: str, change: DeviceUpdate) -> DeviceRecord:
        """Apply a partial update."""
        now = self.clock()
        try:
            async with self.db.write() as conn:
                record = await device_store.get_device(conn, tenant_id, device_id)
                if record is None:
                    raise NotFound(f"device {device_id} does not exist")
                values: dict[str, Any] = {"updated_at": now}
                if change.name is not None and change.name != record.name:
                    _check_name(change.name)
                    if await device_store.get_device_by_name(conn, tenant_id, change.name):
                        raise Conflict(
                            f"a device named {change.name!r} already exists",
                            [
                                FieldError(
                                    "name", f"{change.name!r} is already taken in this tenant"
                                )
                            ],
                        )
                    values["name"] = change.name
                if change.labels is not None:
                    values["labels"] = validate_labels(change.labels)
                if "maintenance_window" in change.model_fields_set:
                    if change.maintenance_window is not None:
                        await _check_window(conn, tenant_id, change.maintenance_window)
                    values["maintenance_window"] = change.maintenance_window
                if change.connection is not None:
                    protocol = Protocol(record.protocol)
                    merged = dict(record.connection)
                    merged.update(self.box.open(record.secrets))
                    for key, value in change.connection.items():
                        if value is None:
                            merged.pop(key, None)
                        else:
                            merged[key] = value
                    connection = validate_connection(protocol, merged)
                    self._check_connection(protocol.value, connection)
                    public, secret = split_connection(protocol, connection)
                    values["connection"] = public
                    values["secrets"] = self.box.seal(secret)
                await device_store.update_device(conn, tenant_id, device_id, values)
                updated = await device_store.get_device(conn, tenant_id, device_id)
        except IntegrityError:
            raise Conflict(f"a device named {change.name!r} already exists") from None
        assert updated is not None
        self._notify_changed(tenant_id, device_id)
        return updated

    async def pin_host_key(self, tenant_id: str, device_id: str, host_key: str) -> str | None:
        """Pin ``host_key`` in an SSH device's connection unless one is pinned already.

        Returns the key pinned after the call (the given one, or the one that was there),
        or ``None`` when the device is gone. Compare-and-set inside one write, so two
        workers meeting the device for the first time cannot pin two different keys.
        """
        async with self.db.write() as conn:
            record = await device_store.get_device(conn, tenant_id, device_id)
            if record is None:
                return None
            pinned = record.connection.get("host_key")
            if pinned:
                return str(pinned)
            connection = dict(record.connection)
            connection["host_key"] = host_key
            await device_store.update_device(
                conn, tenant_id, device_id, {"connection": connection, "updated_at": self.clock()}
            )
        return host_key

    async def delete(self, tenant_id: str, device_id: str) -> None:
        """Delete; Conflict while it has operations that have not finished."""
        async with self.db.write() as conn:
            if await device_store.get_device(conn, tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} does not exist")
            active = await op_store.count_active_for_device(conn, tenant_id, device_id)
            if active:
                raise Conflict(
                    f"device {device_id} has {active} operation(s) not yet finished; "
                    "cancel them or wait for them first"
                )
            await device_store.delete_device(conn, tenant_id, device_id)
        self._notify_changed(tenant_id, device_id)

    @staticmethod
    def secret_names(protocol: str) -> frozenset[str]:
        """Secret connection field names of ``protocol``."""
        return CONNECTION_MODELS[Protocol(protocol)].SECRET_FIELDS
