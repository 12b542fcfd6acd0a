"""What a client may send to create an operation (the three body forms all end here)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
)

from headless_ops.domain.operations import Priority, field_errors
from headless_ops.errors import FieldError, InvalidInput

__all__ = [
    "READ_ONLY_FIELDS",
    "NewOperation",
    "UtcTimestamp",
    "parse_new_operation",
    "parse_timestamp",
]

#: Fields of the operation object that clients never set.
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "status",
        "attempts",
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "result",
        "error",
        "tenant",
        "tenant_id",
        "history",
        "next_window_start",
    }
)


#: The end of a timestamp whose offset is whole minutes (``+02:00``, ``-0530``).
_WHOLE_MINUTE_OFFSET = re.compile(r"[+-]\d\d:?\d\d$")


def parse_timestamp(value: object) -> datetime:
    """An ISO 8601 string with a zone, as UTC; ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError("must be an ISO 8601 string such as 2024-01-16T02:00:00Z")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError("must be an ISO 8601 timestamp such as 2024-01-16T02:00:00Z") from None
    if parsed.tzinfo is None:
        raise ValueError("must carry a time zone (Z or an offset such as +02:00)")
    if not _WHOLE_MINUTE_OFFSET.search(text):
        # ISO 8601 and RFC 3339 offsets are hours and minutes. Python also reads seconds and
        # fractions (+00:00:00.000001), and 3.11 silently drops the fraction: a wrong
        # instant, so they are refused.
        raise ValueError("must have an offset of hours and minutes, such as +02:00 or Z")
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00:00+02:00 is before year 1 in UTC.
        raise ValueError("is out of range once converted to UTC") from None


#: A timestamp that must carry a zone; converted to UTC.
UtcTimestamp = Annotated[datetime, BeforeValidator(parse_timestamp)]

DeviceId = Annotated[StrictStr, Field(min_length=1, max_length=80)]
DeviceName = Annotated[StrictStr, Field(min_length=1, max_length=128)]
WindowName = Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]


class NewOperation(BaseModel):
    """An operation to schedule.

    ``{"device_id": "dev_67892", "operation_type": "backup_configuration",
    "scheduled_at": "2024-01-16T02:00:00Z", "parameters": {…}, "priority": "normal"}``
    """

    model_config = ConfigDict(extra="forbid", strict=True)

    device_id: DeviceId | None = None
    device_name: DeviceName | None = None
    operation_type: Annotated[StrictStr, Field(min_length=1, max_length=32)]
    #: When to run; omitted means now.
    scheduled_at: UtcTimestamp | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    priority: Annotated[Priority, Field(strict=False)] = Priority.NORMAL
    max_attempts: Annotated[StrictInt, Field(ge=1, le=100)] | None = None
    #: Latest start; after it the operation fails as ``expired``.
    expires_at: UtcTimestamp | None = None
    #: Maintenance window name; default: the device's.
    maintenance_window: WindowName | None = None


def parse_new_operation(payload: object, *, by_name: bool) -> NewOperation:
    """Validate a decoded request body; :class:`InvalidInput` names every bad field."""
    if not isinstance(payload, dict):
        raise InvalidInput(
            "the operation must be a JSON object", [FieldError("", "expected an object")]
        )
    errors = [
        FieldError(key, "is set by the server and may not be sent")
        for key in payload
        if key in READ_ONLY_FIELDS
    ]
    key_field, other = ("device_name", "device_id") if by_name else ("device_id", "device_name")
    if other in payload:
        errors.append(
            FieldError(other, f"this endpoint names the device by {key_field}, not {other}")
        )
    if errors:
        raise InvalidInput("invalid operation", errors)
    try:
        op = NewOperation.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput("invalid operation", field_errors(exc)) from None
    if getattr(op, key_field) is None:
        raise InvalidInput("invalid operation", [FieldError(key_field, "Field required")])
    if (
        op.expires_at is not None
        and op.scheduled_at is not None
        and op.expires_at <= op.scheduled_at
    ):
        raise InvalidInput(
            "invalid operation", [FieldError("expires_at", "must be later than scheduled_at")]
        )
    return op
