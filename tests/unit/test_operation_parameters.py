"""Per-type parameter validation of every operation type (domain/operations.py).

For each type: valid parameters are accepted with defaults filled in, and each kind of
invalid input (missing, unknown, ill-typed, out of range, malformed URL or TR-069 path,
badly typed ``set_parameters`` values) is a 400 whose FieldError names the parameter.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headless_ops.domain.operations import (
    OPERATION_ALIASES,
    PARAMETER_MODELS,
    OperationType,
    Priority,
    normalize_operation_type,
    validate_parameters,
)
from headless_ops.errors import InvalidInput

T = OperationType

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
UINT32_MAX = 2**32 - 1


def refused(op_type: OperationType, parameters: object) -> InvalidInput:
    """Validate and return the InvalidInput raised (failing the test when none is)."""
    with pytest.raises(InvalidInput) as info:
        validate_parameters(op_type, parameters)
    assert info.value.status_code == 400
    assert info.value.errors, "a refusal must name at least one field"
    return info.value


def fields(exc: InvalidInput) -> set[str]:
    return {e.field for e in exc.errors}


def message_for(exc: InvalidInput, field: str) -> str:
    matches = [e.message for e in exc.errors if e.field == field]
    assert matches, f"no error for {field!r} in {exc.errors}"
    return matches[0]


def set_value(value: object, kind: str | None = None, name: str = "Device.X.Y") -> dict[str, Any]:
    item: dict[str, Any] = {"name": name, "value": value}
    if kind is not None:
        item["type"] = kind
    return {"values": [item]}


# --- valid parameters, defaults filled -------------------------------------------------

VALID: list[tuple[OperationType, dict[str, Any], dict[str, Any]]] = [
    (
        T.FIRMWARE_UPDATE,
        {"firmware_version": "2.1.3"},
        {"firmware_version": "2.1.3", "auto_reboot": True, "force": False},
    ),
    (
        T.FIRMWARE_UPDATE,
        {"firmware_version": "2.1.3", "auto_reboot": False, "force": True},
        {"firmware_version": "2.1.3", "auto_reboot": False, "force": True},
    ),
    (
        T.CONFIGURATION_SYNC,
        {"config_template": "default_template"},
        {"config_template": "default_template", "variables": {}},
    ),
    (
        T.CONFIGURATION_SYNC,
        {
            "config_template": "edge-v2.1",
            "variables": {"ntp": "pool.ntp.org", "n": [1, {"a": None}]},
        },
        {
            "config_template": "edge-v2.1",
            "variables": {"ntp": "pool.ntp.org", "n": [1, {"a": None}]},
        },
    ),
    (
        # The original description's example, verbatim.
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://backups/devices/", "compression": True, "retention_days": 30},
        {"backup_location": "s3://backups/devices/", "compression": True, "retention_days": 30},
    ),
    (
        # retention_days is optional and stays absent (not null) when omitted.
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file:///var/backups/"},
        {"backup_location": "file:///var/backups/", "compression": False},
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file://localhost/srv/b", "retention_days": 1},
        {"backup_location": "file://localhost/srv/b", "compression": False, "retention_days": 1},
    ),
    (T.REBOOT, {}, {}),
    (T.FACTORY_RESET, {}, {}),
    (
        T.GET_PARAMETERS,
        {"names": ["InternetGatewayDevice.DeviceInfo.", "Device.DeviceInfo.SoftwareVersion"]},
        {"names": ["InternetGatewayDevice.DeviceInfo.", "Device.DeviceInfo.SoftwareVersion"]},
    ),
    (
        # type defaults to string
        T.SET_PARAMETERS,
        {"values": [{"name": "Device.DeviceInfo.ProvisioningCode", "value": "ABC"}]},
        {
            "values": [
                {"name": "Device.DeviceInfo.ProvisioningCode", "value": "ABC", "type": "string"}
            ]
        },
    ),
    (
        T.ADD_OBJECT,
        {"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration."},
        {"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration."},
    ),
    (
        T.DELETE_OBJECT,
        {"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.3."},
        {"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.3."},
    ),
]


@pytest.mark.parametrize(
    ("op_type", "given_params", "expected"),
    VALID,
    ids=[f"{t.value}-{i}" for i, (t, _, _) in enumerate(VALID)],
)
def test_valid_parameters_accepted_with_defaults(
    op_type: OperationType, given_params: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert validate_parameters(op_type, given_params) == expected


def test_every_type_has_a_valid_example_and_a_model() -> None:
    # A new type without a schema or without a test here should fail this test.
    assert set(PARAMETER_MODELS) == set(OperationType)
    assert {t for t, _, _ in VALID} == set(OperationType)


@pytest.mark.parametrize("parameters", [None, [], "{}", 1, True])
def test_parameters_must_be_an_object(parameters: object) -> None:
    exc = refused(T.REBOOT, parameters)
    assert fields(exc) == {"parameters"}
    assert "object" in message_for(exc, "parameters")


# --- missing required ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("op_type", "field"),
    [
        (T.FIRMWARE_UPDATE, "firmware_version"),
        (T.CONFIGURATION_SYNC, "config_template"),
        (T.BACKUP_CONFIGURATION, "backup_location"),
        (T.GET_PARAMETERS, "names"),
        (T.SET_PARAMETERS, "values"),
        (T.ADD_OBJECT, "object_name"),
        (T.DELETE_OBJECT, "object_name"),
    ],
)
def test_missing_required_parameter(op_type: OperationType, field: str) -> None:
    exc = refused(op_type, {})
    assert fields(exc) == {f"parameters.{field}"}
    assert "required" in message_for(exc, f"parameters.{field}").lower()
    assert op_type.value in exc.message


# --- unknown keys ----------------------------------------------------------------------


@pytest.mark.parametrize("op_type", [v[0] for v in VALID], ids=[v[0].value for v in VALID])
def test_unknown_key_refused_for_every_type(op_type: OperationType) -> None:
    base = next(p for t, p, _ in VALID if t is op_type)
    exc = refused(op_type, {**base, "colour": "blue"})
    assert fields(exc) == {"parameters.colour"}


def test_unknown_key_inside_a_set_parameters_value() -> None:
    exc = refused(T.SET_PARAMETERS, {"values": [{"name": "A.B", "value": "x", "notify": True}]})
    assert fields(exc) == {"parameters.values.0.notify"}


# --- wrong JSON types ------------------------------------------------------------------

WRONG_TYPES: list[tuple[OperationType, dict[str, Any], str]] = [
    (T.FIRMWARE_UPDATE, {"firmware_version": 213}, "firmware_version"),
    (T.FIRMWARE_UPDATE, {"firmware_version": ["2.1.3"]}, "firmware_version"),
    # Strings, numbers are not booleans.
    (T.FIRMWARE_UPDATE, {"firmware_version": "1", "auto_reboot": "true"}, "auto_reboot"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "1", "auto_reboot": 1}, "auto_reboot"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "1", "auto_reboot": 0}, "auto_reboot"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "1", "auto_reboot": None}, "auto_reboot"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "1", "force": "false"}, "force"),
    (T.CONFIGURATION_SYNC, {"config_template": 7}, "config_template"),
    (T.CONFIGURATION_SYNC, {"config_template": "t", "variables": []}, "variables"),
    (T.CONFIGURATION_SYNC, {"config_template": "t", "variables": "a=b"}, "variables"),
    (T.BACKUP_CONFIGURATION, {"backup_location": {"s3": "b"}}, "backup_location"),
    (T.BACKUP_CONFIGURATION, {"backup_location": "s3://b/", "compression": 1}, "compression"),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "compression": "true"},
        "compression",
    ),
    # Booleans and floats are not integers, even when Python would call them so.
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": False},
        "retention_days",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": True},
        "retention_days",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": 30.0},
        "retention_days",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": "30"},
        "retention_days",
    ),
    (T.GET_PARAMETERS, {"names": "Device."}, "names"),
    (T.GET_PARAMETERS, {"names": [1]}, "names.0"),
    (T.SET_PARAMETERS, {"values": {"name": "A.B", "value": "x"}}, "values"),
    (T.SET_PARAMETERS, {"values": ["A.B=x"]}, "values.0"),
    (T.SET_PARAMETERS, {"values": [{"name": 5, "value": "x"}]}, "values.0.name"),
    (T.ADD_OBJECT, {"object_name": None}, "object_name"),
    (T.DELETE_OBJECT, {"object_name": 3}, "object_name"),
]


@pytest.mark.parametrize(
    ("op_type", "parameters", "field"),
    WRONG_TYPES,
    ids=[f"{t.value}-{f}-{i}" for i, (t, _, f) in enumerate(WRONG_TYPES)],
)
def test_wrong_json_type_refused(
    op_type: OperationType, parameters: dict[str, Any], field: str
) -> None:
    exc = refused(op_type, parameters)
    assert fields(exc) == {f"parameters.{field}"}


# --- values out of range or malformed --------------------------------------------------

BAD_VALUES: list[tuple[OperationType, dict[str, Any], str, str]] = [
    (T.FIRMWARE_UPDATE, {"firmware_version": ""}, "firmware_version", "at least 1"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "   "}, "firmware_version", "spaces"),
    (T.FIRMWARE_UPDATE, {"firmware_version": " 2.1.3"}, "firmware_version", "spaces"),
    (T.FIRMWARE_UPDATE, {"firmware_version": "v" * 129}, "firmware_version", "at most 128"),
    (T.CONFIGURATION_SYNC, {"config_template": ""}, "config_template", "template name"),
    (T.CONFIGURATION_SYNC, {"config_template": "../etc/passwd"}, "config_template", "template"),
    (T.CONFIGURATION_SYNC, {"config_template": "a b"}, "config_template", "template name"),
    (T.CONFIGURATION_SYNC, {"config_template": "t" * 129}, "config_template", "template"),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": 0},
        "retention_days",
        "greater than or equal to 1",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": -5},
        "retention_days",
        "greater than or equal to 1",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/", "retention_days": 36501},
        "retention_days",
        "less than or equal to 36500",
    ),
    (T.BACKUP_CONFIGURATION, {"backup_location": ""}, "backup_location", "at least 1"),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "http://backups.example.com/x"},
        "backup_location",
        "file:// or s3://",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "https://backups.example.com/x"},
        "backup_location",
        "file:// or s3://",
    ),
    (T.BACKUP_CONFIGURATION, {"backup_location": "/var/backups"}, "backup_location", "URL"),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "ftp://host/x"},
        "backup_location",
        "file:// or s3://",
    ),
    # file://var/backups names host "var", not the absolute path /var/backups.
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file://var/backups"},
        "backup_location",
        "absolute path",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file:var/backups"},
        "backup_location",
        "absolute path",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file:///var/backups/../../etc"},
        "backup_location",
        "'..'",
    ),
    (T.BACKUP_CONFIGURATION, {"backup_location": "s3:///prefix/"}, "backup_location", "bucket"),
    (T.BACKUP_CONFIGURATION, {"backup_location": "s3://"}, "backup_location", "bucket"),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/x?versionId=1"},
        "backup_location",
        "query or fragment",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "file:///var/b#frag"},
        "backup_location",
        "query or fragment",
    ),
    (
        T.BACKUP_CONFIGURATION,
        {"backup_location": "s3://b/" + "x" * 1020},
        "backup_location",
        "at most 1024",
    ),
    (T.GET_PARAMETERS, {"names": []}, "names", "at least 1"),
    (T.GET_PARAMETERS, {"names": ["A.B"] * 1001}, "names", "at most 1000"),
    (T.GET_PARAMETERS, {"names": ["Device.DeviceInfo.", "Device.DeviceInfo."]}, "names", "repeat"),
    (T.GET_PARAMETERS, {"names": ["Device..Info"]}, "names", "not a parameter path"),
    (T.GET_PARAMETERS, {"names": [".Device"]}, "names", "not a parameter path"),
    (T.GET_PARAMETERS, {"names": ["Device Info"]}, "names", "not a parameter path"),
    (T.GET_PARAMETERS, {"names": [""]}, "names.0", "at least 1"),
    (T.GET_PARAMETERS, {"names": ["A." * 129]}, "names.0", "at most 256"),
    (T.SET_PARAMETERS, {"values": []}, "values", "at least 1"),
    # set_parameters needs full paths: a partial path names many parameters.
    (T.SET_PARAMETERS, set_value("x", name="Device.DeviceInfo."), "values.0.name", "full"),
    (
        T.SET_PARAMETERS,
        {"values": [{"name": "A.B", "value": "x"}, {"name": "A.B", "value": "y"}]},
        "values",
        "once",
    ),
    (
        T.SET_PARAMETERS,
        set_value("x", kind="float"),
        "values.0.type",
        "'string', 'integer', 'unsignedInt', 'boolean', 'dateTime' or 'base64'",
    ),
    # add_object takes the partial path of the object table …
    (T.ADD_OBJECT, {"object_name": "Device.Hosts.Host"}, "object_name", "ending with '.'"),
    (T.ADD_OBJECT, {"object_name": "Device..Host."}, "object_name", "ending with '.'"),
    (T.ADD_OBJECT, {"object_name": ""}, "object_name", "at least 1"),
    # … delete_object the path of one instance: ``.<n>.`` at the end.
    (T.DELETE_OBJECT, {"object_name": "Device.Hosts.Host."}, "object_name", "'.<number>.'"),
    (T.DELETE_OBJECT, {"object_name": "Device.Hosts.Host.3"}, "object_name", "'.<number>.'"),
    (T.DELETE_OBJECT, {"object_name": "Device.Hosts.Host.x."}, "object_name", "'.<number>.'"),
    (T.DELETE_OBJECT, {"object_name": "3."}, "object_name", "'.<number>.'"),
]


@pytest.mark.parametrize(
    ("op_type", "parameters", "field", "message"),
    BAD_VALUES,
    ids=[f"{t.value}-{f}-{i}" for i, (t, _, f, _) in enumerate(BAD_VALUES)],
)
def test_bad_value_refused(
    op_type: OperationType, parameters: dict[str, Any], field: str, message: str
) -> None:
    exc = refused(op_type, parameters)
    assert fields(exc) == {f"parameters.{field}"}
    assert message in message_for(exc, f"parameters.{field}")


@pytest.mark.parametrize(
    "location",
    ["s3://backups/devices/", "s3://b", "file:///var/backups/", "file://localhost/srv/x/"],
)
def test_good_backup_locations(location: str) -> None:
    params = validate_parameters(T.BACKUP_CONFIGURATION, {"backup_location": location})
    assert params["backup_location"] == location


@pytest.mark.parametrize(
    "path", ["Device.", "Device.DeviceInfo.", "A.1.", "Device.WiFi.SSID.1.SSID", "X_ACME-Y.z_1"]
)
def test_get_parameters_accepts_partial_and_full_paths(path: str) -> None:
    assert validate_parameters(T.GET_PARAMETERS, {"names": [path]}) == {"names": [path]}


@pytest.mark.parametrize("path", ["Device.Hosts.Host.1.", "A.B.12."])
def test_instance_paths_are_accepted_by_both_object_operations(path: str) -> None:
    # An instance path also ends with '.', so add_object (a sub-table) takes it too.
    assert validate_parameters(T.DELETE_OBJECT, {"object_name": path}) == {"object_name": path}
    assert validate_parameters(T.ADD_OBJECT, {"object_name": path}) == {"object_name": path}


# --- set_parameters: typed values ------------------------------------------------------

GOOD_TYPED: list[tuple[object, str]] = [
    ("", "string"),
    ("any text ✓", "string"),
    ("x" * 65535, "string"),
    (0, "integer"),
    (INT32_MIN, "integer"),
    (INT32_MAX, "integer"),
    (0, "unsignedInt"),
    (UINT32_MAX, "unsignedInt"),
    (True, "boolean"),
    (False, "boolean"),
    ("2024-01-15T10:30:00Z", "dateTime"),
    ("2024-01-15T10:30:00.123+02:00", "dateTime"),
    # TR-069's "unknown time" is the one dateTime allowed without a zone.
    ("0001-01-01T00:00:00", "dateTime"),
    ("", "base64"),
    ("aGVsbG8=", "base64"),
    ("AAEC/w==", "base64"),
]


@pytest.mark.parametrize(("value", "kind"), GOOD_TYPED, ids=lambda v: str(v)[:30])
def test_set_parameters_typed_value_accepted(value: object, kind: str) -> None:
    params = validate_parameters(T.SET_PARAMETERS, set_value(value, kind))
    assert params == {"values": [{"name": "Device.X.Y", "value": value, "type": kind}]}
    # bool is a subclass of int: make sure a boolean stayed a boolean and vice versa.
    assert type(params["values"][0]["value"]) is type(value)


BAD_TYPED: list[tuple[object, str | None, str]] = [
    (1, None, "must be a string for type string"),
    (True, "string", "must be a string for type string"),
    ("x" * 65536, "string", "longer than 65535"),
    ("5", "integer", "JSON integer"),
    (True, "integer", "JSON integer"),
    (False, "unsignedInt", "JSON integer"),
    (INT32_MAX + 1, "integer", "between -2147483648 and 2147483647"),
    (INT32_MIN - 1, "integer", "between -2147483648 and 2147483647"),
    (-1, "unsignedInt", "between 0 and 4294967295"),
    (UINT32_MAX + 1, "unsignedInt", "between 0 and 4294967295"),
    ("true", "boolean", "true or false"),
    (1, "boolean", "true or false"),
    (0, "boolean", "true or false"),
    ("2024-01-15T10:30:00", "dateTime", "must carry a zone"),
    ("2024-01-15", "dateTime", "must carry a zone"),
    ("yesterday", "dateTime", "ISO 8601"),
    ("2024-13-01T00:00:00Z", "dateTime", "ISO 8601"),
    (1705314600, "dateTime", "must be a string"),
    ("abc", "base64", "valid base64"),
    ("aGVsbG8", "base64", "valid base64"),
    ("aGVs bG8=", "base64", "valid base64"),
    ("a?==", "base64", "valid base64"),
    ("é", "base64", "valid base64"),
    (True, "base64", "must be a string"),
]


@pytest.mark.parametrize(("value", "kind", "message"), BAD_TYPED, ids=lambda v: str(v)[:30])
def test_set_parameters_typed_value_refused(value: object, kind: str | None, message: str) -> None:
    exc = refused(T.SET_PARAMETERS, set_value(value, kind))
    # The error points at the offending entry of ``values``.
    assert fields(exc) == {"parameters.values.0"}
    assert message in message_for(exc, "parameters.values.0")


@pytest.mark.parametrize("value", [1.5, None, [], {"v": 1}])
def test_set_parameters_value_of_no_allowed_json_type(value: object) -> None:
    exc = refused(T.SET_PARAMETERS, set_value(value, "integer"))
    assert fields(exc)
    assert all(f.startswith("parameters.values.0.value") for f in fields(exc))


def test_set_parameters_error_names_the_failing_entry_index() -> None:
    exc = refused(
        T.SET_PARAMETERS,
        {
            "values": [
                {"name": "A.Ok", "value": 1, "type": "integer"},
                {"name": "A.Bad", "value": -1, "type": "unsignedInt"},
            ]
        },
    )
    assert fields(exc) == {"parameters.values.1"}


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=0, max_value=UINT32_MAX))
def test_any_uint32_accepted_for_unsigned_int(value: int) -> None:
    params = validate_parameters(T.SET_PARAMETERS, set_value(value, "unsignedInt"))
    assert params["values"][0]["value"] == value


@settings(max_examples=150, deadline=None)
@given(st.integers(max_value=-1) | st.integers(min_value=UINT32_MAX + 1, max_value=2**63 - 1))
def test_any_out_of_range_refused_for_unsigned_int(value: int) -> None:
    exc = refused(T.SET_PARAMETERS, set_value(value, "unsignedInt"))
    assert fields(exc) == {"parameters.values.0"}


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=INT32_MIN, max_value=INT32_MAX))
def test_any_int32_accepted_for_integer(value: int) -> None:
    params = validate_parameters(T.SET_PARAMETERS, set_value(value, "integer"))
    assert params["values"][0]["value"] == value


@settings(max_examples=150, deadline=None)
@given(
    st.integers(max_value=INT32_MIN - 1, min_value=-(2**63))
    | st.integers(min_value=INT32_MAX + 1, max_value=2**63 - 1)
)
def test_any_out_of_range_refused_for_integer(value: int) -> None:
    exc = refused(T.SET_PARAMETERS, set_value(value, "integer"))
    assert "between -2147483648 and 2147483647" in message_for(exc, "parameters.values.0")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200))
def test_any_canonical_base64_accepted(data: bytes) -> None:
    encoded = base64.b64encode(data).decode()
    params = validate_parameters(T.SET_PARAMETERS, set_value(encoded, "base64"))
    assert params["values"][0]["value"] == encoded


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=0, max_value=10**6), st.booleans())
def test_retention_days_range(days: int, compression: bool) -> None:
    params = {"backup_location": "s3://b/", "retention_days": days, "compression": compression}
    if 1 <= days <= 36500:
        assert validate_parameters(T.BACKUP_CONFIGURATION, params) == params
    else:
        assert fields(refused(T.BACKUP_CONFIGURATION, params)) == {"parameters.retention_days"}


# --- operation type names --------------------------------------------------------------


@pytest.mark.parametrize(
    ("alias", "canonical"),
    [
        ("get", T.GET_PARAMETERS),
        ("set", T.SET_PARAMETERS),
        ("add.obj", T.ADD_OBJECT),
        ("del.obj", T.DELETE_OBJECT),
    ],
)
def test_aliases_normalise(alias: str, canonical: OperationType) -> None:
    assert normalize_operation_type(alias) is canonical
    assert OPERATION_ALIASES[alias] is canonical


@pytest.mark.parametrize("op_type", list(OperationType))
def test_canonical_names_are_themselves(op_type: OperationType) -> None:
    assert normalize_operation_type(op_type.value) is op_type


@pytest.mark.parametrize(
    "name", ["upgrade", "", "Firmware_Update", "GET", "firmware_update ", "get_parameter"]
)
def test_unknown_type_is_a_400_listing_known_types(name: str) -> None:
    with pytest.raises(InvalidInput) as info:
        normalize_operation_type(name)
    exc = info.value
    assert exc.status_code == 400
    assert fields(exc) == {"operation_type"}
    message = message_for(exc, "operation_type")
    assert repr(name) in message
    for known in [t.value for t in OperationType] + list(OPERATION_ALIASES):
        assert known in message


def test_priorities_rank_in_order() -> None:
    ranks = [p.rank for p in (Priority.LOW, Priority.NORMAL, Priority.HIGH, Priority.CRITICAL)]
    assert ranks == [0, 1, 2, 3]
    assert all(Priority.from_rank(p.rank) is p for p in Priority)
