"""What a client may send to create an operation (services/requests.py).

Read-only fields are refused, not ignored; each endpoint names the device its own way
(``device_id`` or ``device_name``); ``scheduled_at``/``expires_at`` must carry a zone and
are converted to UTC; ``expires_at`` must follow ``scheduled_at``; priority is one of four
names; ``max_attempts`` is a strict integer in range.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.domain.operations import Priority
from headless_ops.errors import InvalidInput
from headless_ops.services.requests import READ_ONLY_FIELDS, parse_new_operation, parse_timestamp

BY_ID = {"device_id": "dev_67892", "operation_type": "reboot"}
BY_NAME = {"device_name": "gw-1", "operation_type": "reboot"}


def refused(payload: object, *, by_name: bool = False) -> InvalidInput:
    with pytest.raises(InvalidInput) as info:
        parse_new_operation(payload, by_name=by_name)
    assert info.value.status_code == 400
    assert info.value.errors
    return info.value


def errors(exc: InvalidInput) -> dict[str, str]:
    return {e.field: e.message for e in exc.errors}


def test_the_original_example_parses() -> None:
    op = parse_new_operation(
        {
            "device_id": "dev_67892",
            "operation_type": "backup_configuration",
            "scheduled_at": "2024-01-16T02:00:00Z",
            "parameters": {
                "backup_location": "s3://backups/devices/",
                "compression": True,
                "retention_days": 30,
            },
            "priority": "normal",
        },
        by_name=False,
    )
    assert op.device_id == "dev_67892"
    assert op.device_name is None
    assert op.operation_type == "backup_configuration"
    assert op.scheduled_at == datetime(2024, 1, 16, 2, 0, tzinfo=UTC)
    assert op.parameters == {
        "backup_location": "s3://backups/devices/",
        "compression": True,
        "retention_days": 30,
    }
    assert op.priority is Priority.NORMAL


def test_defaults() -> None:
    op = parse_new_operation(BY_ID, by_name=False)
    assert op.scheduled_at is None  # "now", decided by the service
    assert op.parameters == {}
    assert op.priority is Priority.NORMAL
    assert op.max_attempts is None  # the configured default
    assert op.expires_at is None
    assert op.maintenance_window is None


@pytest.mark.parametrize("payload", [[], "{}", None, 3, [BY_ID]])
def test_body_must_be_an_object(payload: object) -> None:
    exc = refused(payload)
    assert errors(exc) == {"": "expected an object"}


# --- read-only fields -------------------------------------------------------------------

#: The fields the contract says clients never set.
CONTRACT_READ_ONLY = [
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
]


@pytest.mark.parametrize("field", CONTRACT_READ_ONLY)
def test_read_only_field_refused_with_a_clear_message(field: str) -> None:
    exc = refused({**BY_ID, field: None})
    assert errors(exc) == {field: "is set by the server and may not be sent"}
    assert field in READ_ONLY_FIELDS


def test_status_scheduled_is_refused_too() -> None:
    # Even the value the server would set is refused: nothing is silently applied.
    exc = refused({**BY_ID, "status": "scheduled"})
    assert set(errors(exc)) == {"status"}


def test_every_read_only_field_is_named_at_once() -> None:
    payload = {**BY_ID, "id": "op_1", "status": "completed", "attempts": 0, "created_at": "x"}
    exc = refused(payload)
    assert set(errors(exc)) == {"id", "status", "attempts", "created_at"}


@pytest.mark.parametrize(
    "field", ["lease_owner", "lease_version", "run_after", "cancel_requested", "colour"]
)
def test_internal_and_unknown_fields_refused(field: str) -> None:
    exc = refused({**BY_ID, field: 1})
    assert set(errors(exc)) == {field}


# --- which field names the device -------------------------------------------------------


def test_by_id_endpoint() -> None:
    assert parse_new_operation(BY_ID, by_name=False).device_id == "dev_67892"
    exc = refused(BY_NAME, by_name=False)
    assert errors(exc) == {
        "device_name": "this endpoint names the device by device_id, not device_name"
    }
    exc = refused({"operation_type": "reboot"}, by_name=False)
    assert set(errors(exc)) == {"device_id"}
    assert "required" in errors(exc)["device_id"].lower()


def test_by_name_endpoint() -> None:
    op = parse_new_operation(BY_NAME, by_name=True)
    assert op.device_name == "gw-1"
    assert op.device_id is None
    exc = refused(BY_ID, by_name=True)
    assert errors(exc) == {
        "device_id": "this endpoint names the device by device_name, not device_id"
    }
    exc = refused({"operation_type": "reboot"}, by_name=True)
    assert set(errors(exc)) == {"device_name"}


@pytest.mark.parametrize("by_name", [False, True])
def test_both_device_fields_refused(by_name: bool) -> None:
    exc = refused({**BY_ID, **BY_NAME}, by_name=by_name)
    assert set(errors(exc)) == {"device_id" if by_name else "device_name"}


@pytest.mark.parametrize(
    ("payload", "by_name", "field"),
    [
        ({**BY_ID, "device_id": None}, False, "device_id"),
        ({**BY_ID, "device_id": ""}, False, "device_id"),
        ({**BY_ID, "device_id": 67892}, False, "device_id"),
        ({**BY_ID, "device_id": "d" * 81}, False, "device_id"),
        ({**BY_NAME, "device_name": None}, True, "device_name"),
        ({**BY_NAME, "device_name": ""}, True, "device_name"),
        ({**BY_NAME, "device_name": ["gw-1"]}, True, "device_name"),
        ({**BY_NAME, "device_name": "n" * 129}, True, "device_name"),
    ],
)
def test_bad_device_reference(payload: dict[str, Any], by_name: bool, field: str) -> None:
    assert set(errors(refused(payload, by_name=by_name))) == {field}


# --- timestamps ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-16T02:00:00Z", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
        ("2024-01-16T02:00:00z", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
        ("2024-01-16T02:00:00+00:00", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
        ("2024-01-16T04:00:00+02:00", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
        ("2024-01-15T21:00:00-05:00", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
        ("2024-01-16T07:30:00.250+05:30", datetime(2024, 1, 16, 2, 0, 0, 250_000, tzinfo=UTC)),
        (" 2024-01-16T02:00:00Z ", datetime(2024, 1, 16, 2, 0, tzinfo=UTC)),
    ],
)
def test_scheduled_at_offsets_converted_to_utc(text: str, expected: datetime) -> None:
    op = parse_new_operation({**BY_ID, "scheduled_at": text}, by_name=False)
    assert op.scheduled_at == expected
    assert op.scheduled_at is not None
    assert op.scheduled_at.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2024-01-16T02:00:00", "must carry a time zone"),
        ("2024-01-16 02:00:00", "must carry a time zone"),
        ("2024-01-16", "must carry a time zone"),
        ("2024-01-16T02:00:00.123456", "must carry a time zone"),
        ("tomorrow", "ISO 8601"),
        ("2024-02-30T00:00:00Z", "ISO 8601"),
        ("", "ISO 8601"),
        (1705370400, "ISO 8601 string"),
        # Valid text whose UTC instant is before year 1 or after 9999.
        ("0001-01-01T00:00:00+02:00", "out of range"),
        ("9999-12-31T23:59:59-02:00", "out of range"),
    ],
)
@pytest.mark.parametrize("field", ["scheduled_at", "expires_at"])
def test_bad_timestamps_refused(field: str, value: object, message: str) -> None:
    exc = refused({**BY_ID, field: value})
    assert set(errors(exc)) == {field}
    assert message in errors(exc)[field]


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2200, 1, 1),
        # Every offset ISO 8601 can write: whole minutes (finer ones are refused, below).
        timezones=st.builds(
            lambda minutes: timezone(timedelta(minutes=minutes)),
            st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59),
        ),
    )
)
def test_any_offset_gives_the_same_instant_in_utc(moment: datetime) -> None:
    op = parse_new_operation({**BY_ID, "scheduled_at": moment.isoformat()}, by_name=False)
    assert op.scheduled_at == moment
    assert op.scheduled_at is not None
    assert op.scheduled_at.tzinfo is UTC


@settings(max_examples=100, deadline=None)
@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)))
def test_any_zoneless_timestamp_refused(moment: datetime) -> None:
    exc = refused({**BY_ID, "scheduled_at": moment.isoformat()})
    assert "must carry a time zone" in errors(exc)["scheduled_at"]


def test_null_timestamps_mean_omitted() -> None:
    op = parse_new_operation({**BY_ID, "scheduled_at": None, "expires_at": None}, by_name=False)
    assert op.scheduled_at is None
    assert op.expires_at is None


def test_parse_timestamp_directly() -> None:
    assert parse_timestamp("2024-01-16T03:00:00+01:00") == datetime(2024, 1, 16, 2, tzinfo=UTC)
    with pytest.raises(ValueError, match="time zone"):
        parse_timestamp("2024-01-16T03:00:00")
    with pytest.raises(ValueError, match="ISO 8601 string"):
        parse_timestamp(b"2024-01-16T03:00:00Z")


def test_expires_at_after_scheduled_at() -> None:
    op = parse_new_operation(
        {
            **BY_ID,
            "scheduled_at": "2024-01-16T02:00:00Z",
            "expires_at": "2024-01-16T04:00:01+02:00",
        },
        by_name=False,
    )
    assert op.expires_at == datetime(2024, 1, 16, 2, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    "expires_at",
    [
        "2024-01-16T02:00:00Z",  # equal: no time to start at all
        "2024-01-16T04:00:00+02:00",  # equal once converted
        "2024-01-16T01:59:59Z",
        "2024-01-16T03:00:00+02:00",  # looks later, is earlier in UTC
    ],
)
def test_expires_at_not_after_scheduled_at_refused(expires_at: str) -> None:
    exc = refused({**BY_ID, "scheduled_at": "2024-01-16T02:00:00Z", "expires_at": expires_at})
    assert errors(exc) == {"expires_at": "must be later than scheduled_at"}


def test_expires_at_alone_is_checked_later() -> None:
    # Without scheduled_at the start is "now": the service compares with its clock.
    op = parse_new_operation({**BY_ID, "expires_at": "2000-01-01T00:00:00Z"}, by_name=False)
    assert op.expires_at == datetime(2000, 1, 1, tzinfo=UTC)


# --- priority, attempts, window, type, parameters -----------------------------------------


@pytest.mark.parametrize("name", ["low", "normal", "high", "critical"])
def test_priorities_accepted(name: str) -> None:
    op = parse_new_operation({**BY_ID, "priority": name}, by_name=False)
    assert op.priority is Priority(name)


@pytest.mark.parametrize("value", ["urgent", "HIGH", "Normal", "", 2, 0, True, None, ["high"]])
def test_bad_priorities_refused(value: object) -> None:
    exc = refused({**BY_ID, "priority": value})
    assert set(errors(exc)) == {"priority"}
    assert "'low', 'normal', 'high' or 'critical'" in errors(exc)["priority"]


@pytest.mark.parametrize("value", [1, 3, 100])
def test_max_attempts_accepted(value: int) -> None:
    assert (
        parse_new_operation({**BY_ID, "max_attempts": value}, by_name=False).max_attempts == value
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "greater than or equal to 1"),
        (-1, "greater than or equal to 1"),
        (101, "less than or equal to 100"),
        ("3", "valid integer"),
        (3.0, "valid integer"),
        (2.5, "valid integer"),
        (True, "valid integer"),
        (False, "valid integer"),
        ([3], "valid integer"),
    ],
)
def test_max_attempts_strict_int(value: object, message: str) -> None:
    exc = refused({**BY_ID, "max_attempts": value})
    assert set(errors(exc)) == {"max_attempts"}
    assert message in errors(exc)["max_attempts"]


@pytest.mark.parametrize("name", ["night", "Weekend-2", "a.b_c", "w" * 128])
def test_maintenance_window_names_accepted(name: str) -> None:
    op = parse_new_operation({**BY_ID, "maintenance_window": name}, by_name=False)
    assert op.maintenance_window == name


@pytest.mark.parametrize("name", ["", "-night", "night window", "w" * 129, 5])
def test_bad_maintenance_window_refused(name: object) -> None:
    assert set(errors(refused({**BY_ID, "maintenance_window": name}))) == {"maintenance_window"}


@pytest.mark.parametrize("value", [None, "", 5, "x" * 33, ["reboot"]])
def test_bad_operation_type_refused(value: object) -> None:
    assert set(errors(refused({**BY_ID, "operation_type": value}))) == {"operation_type"}


def test_operation_type_required() -> None:
    assert set(errors(refused({"device_id": "dev_1"}))) == {"operation_type"}


@pytest.mark.parametrize("value", [None, [], "{}", 1])
def test_parameters_must_be_an_object(value: object) -> None:
    assert set(errors(refused({**BY_ID, "parameters": value}))) == {"parameters"}


def test_every_bad_field_is_named_in_one_answer() -> None:
    exc = refused({**BY_ID, "priority": "urgent", "max_attempts": "3", "scheduled_at": "soon"})
    assert set(errors(exc)) == {"priority", "max_attempts", "scheduled_at"}


@pytest.mark.parametrize(
    "value",
    [
        "2000-01-01T00:00:00+00:00:00.000001",  # Python 3.11 would drop the fraction
        "2000-01-01T00:00:00+01:00:30",
        "2000-01-01T00:00:00-05:00:00",
    ],
)
def test_offsets_finer_than_minutes_are_refused(value: str) -> None:
    exc = refused({**BY_ID, "scheduled_at": value})
    assert "hours and minutes" in errors(exc)["scheduled_at"]
