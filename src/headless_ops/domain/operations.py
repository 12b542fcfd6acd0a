"""Operation types, their parameter schemas and priorities.

Parameter models are strict: ``"true"`` is not a boolean, ``false`` is not an integer,
unknown keys are refused. Each type's model is the single source of truth for what the
API accepts and what the helpers receive.
"""

from __future__ import annotations

import binascii
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)

from headless_ops.errors import FieldError, InvalidInput

__all__ = [
    "OPERATION_ALIASES",
    "PARAMETER_MODELS",
    "OperationType",
    "Priority",
    "field_errors",
    "normalize_operation_type",
    "validate_parameters",
]


class OperationType(StrEnum):
    """Every operation the API can schedule."""

    FIRMWARE_UPDATE = "firmware_update"
    CONFIGURATION_SYNC = "configuration_sync"
    BACKUP_CONFIGURATION = "backup_configuration"
    REBOOT = "reboot"
    FACTORY_RESET = "factory_reset"
    GET_PARAMETERS = "get_parameters"
    SET_PARAMETERS = "set_parameters"
    ADD_OBJECT = "add_object"
    DELETE_OBJECT = "delete_object"


#: Short names of the product's later documentation, accepted and stored canonically.
OPERATION_ALIASES: dict[str, OperationType] = {
    "get": OperationType.GET_PARAMETERS,
    "set": OperationType.SET_PARAMETERS,
    "add.obj": OperationType.ADD_OBJECT,
    "del.obj": OperationType.DELETE_OBJECT,
}


class Priority(StrEnum):
    """Higher runs first when several operations are due."""

    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Sortable rank: low 0 … critical 3."""
        return _PRIORITY_RANK[self]

    @classmethod
    def from_rank(cls, rank: int) -> Priority:
        """The priority stored as ``rank``."""
        return _RANK_PRIORITY[rank]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}
_RANK_PRIORITY = {v: k for k, v in _PRIORITY_RANK.items()}

# Used with fullmatch(): `$` alone also matches before a trailing newline.
_SEGMENT = r"(?:[A-Za-z_][A-Za-z0-9_-]*|[0-9]+)"
_FULL_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*$")
_PARTIAL_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*\.$")
_INSTANCE_PATH = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*\.[0-9]+\.$")
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

_INT32 = (-(2**31), 2**31 - 1)
_UINT32 = (0, 2**32 - 1)

ParamPath = Annotated[StrictStr, Field(min_length=1, max_length=256)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FirmwareUpdateParams(_Params):
    """``{"firmware_version": "2.1.3", "auto_reboot": true, "force": false}``"""

    firmware_version: Annotated[StrictStr, Field(min_length=1, max_length=128)]
    auto_reboot: StrictBool = True
    #: Install even when the device already reports ``firmware_version``.
    force: StrictBool = False

    @field_validator("firmware_version")
    @classmethod
    def _no_blank(cls, value: str) -> str:
        if not value.strip() or value != value.strip():
            raise ValueError("must be a version without surrounding spaces")
        return value


class ConfigurationSyncParams(_Params):
    """``{"config_template": "default_template", "variables": {"ntp": "pool.ntp.org"}}``"""

    config_template: StrictStr
    variables: dict[str, Any] = Field(default_factory=dict)

    @field_validator("config_template")
    @classmethod
    def _template_name(cls, value: str) -> str:
        if not _TEMPLATE_NAME.fullmatch(value):
            raise ValueError(
                "must be a template name: letters, digits, '.', '_' or '-', at most 128"
            )
        return value


class BackupConfigurationParams(_Params):
    """``{"backup_location": "s3://backups/devices/", "compression": true, "retention_days": 30}``"""

    backup_location: Annotated[StrictStr, Field(min_length=1, max_length=1024)]
    compression: StrictBool = False
    retention_days: Annotated[StrictInt, Field(ge=1, le=36500)] | None = None

    @field_validator("backup_location")
    @classmethod
    def _location(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "s3":
            if not parts.netloc:
                raise ValueError("an s3:// location needs a bucket: s3://bucket/prefix/")
        elif parts.scheme == "file":
            if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
                raise ValueError("a file:// location needs an absolute path: file:///var/backups/")
            if ".." in parts.path.split("/"):
                raise ValueError("a file:// location may not contain '..'")
        else:
            raise ValueError("must be a file:// or s3:// URL")
        if parts.query or parts.fragment:
            raise ValueError("may not have a query or fragment")
        return value


class _NoParams(_Params):
    """No parameters: ``{}``."""


class RebootParams(_NoParams):
    """``{}``"""


class FactoryResetParams(_NoParams):
    """``{}``"""


class GetParametersParams(_Params):
    """``{"names": ["InternetGatewayDevice.DeviceInfo.", "Device.DeviceInfo.SoftwareVersion"]}``

    A name ending with ``.`` is a partial path: every parameter below it.
    """

    names: Annotated[list[ParamPath], Field(min_length=1, max_length=1000)]

    @field_validator("names")
    @classmethod
    def _paths(cls, names: list[str]) -> list[str]:
        for name in names:
            if not (_FULL_PATH.fullmatch(name) or _PARTIAL_PATH.fullmatch(name)):
                raise ValueError(f"{name!r} is not a parameter path")
        if len(set(names)) != len(names):
            raise ValueError("names must not repeat")
        return names


ParameterValueType = Literal["string", "integer", "unsignedInt", "boolean", "dateTime", "base64"]

#: The ``xsi:type`` a TR-069 value is sent with, by the type names of the contract (and the
#: data models' own names, which configuration templates may use too).
XSD_TYPES: dict[str, str] = {
    "string": "xsd:string",
    "integer": "xsd:int",
    "int": "xsd:int",
    "unsignedInt": "xsd:unsignedInt",
    "long": "xsd:long",
    "unsignedLong": "xsd:unsignedLong",
    "boolean": "xsd:boolean",
    "dateTime": "xsd:dateTime",
    "base64": "xsd:base64Binary",
    "hexBinary": "xsd:hexBinary",
}


class ParameterValue(_Params):
    """``{"name": "Device.ManagementServer.PeriodicInformInterval", "value": 300, "type": "unsignedInt"}``"""

    name: ParamPath
    value: StrictStr | StrictBool | StrictInt
    type: ParameterValueType = "string"

    @field_validator("name")
    @classmethod
    def _path(cls, name: str) -> str:
        if not _FULL_PATH.fullmatch(name):
            raise ValueError(f"{name!r} is not a full parameter path")
        return name

    @model_validator(mode="after")
    def _typed(self) -> ParameterValue:
        value, kind = self.value, self.type
        if kind in ("integer", "unsignedInt"):
            low, high = _INT32 if kind == "integer" else _UINT32
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"value must be a JSON integer for type {kind}")
            if not low <= value <= high:
                raise ValueError(f"value must be between {low} and {high} for type {kind}")
        elif kind == "boolean":
            if not isinstance(value, bool):
                raise ValueError("value must be true or false for type boolean")
        else:
            if not isinstance(value, str):
                raise ValueError(f"value must be a string for type {kind}")
            if len(value) > 65535:
                raise ValueError("value is longer than 65535 characters")
            if kind == "dateTime":
                try:
                    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
                except ValueError:
                    raise ValueError("value must be an ISO 8601 dateTime") from None
                if parsed.tzinfo is None and not value.startswith("0001-01-01"):
                    raise ValueError("a dateTime value must carry a zone (Z or an offset)")
            elif kind == "base64":
                try:
                    binascii.a2b_base64(value.encode("ascii"), strict_mode=True)
                except (binascii.Error, UnicodeEncodeError):
                    raise ValueError("value must be valid base64") from None
        return self


class SetParametersParams(_Params):
    """``{"values": [{"name": "…", "value": "…", "type": "string"}]}``"""

    values: Annotated[list[ParameterValue], Field(min_length=1, max_length=1000)]

    @field_validator("values")
    @classmethod
    def _unique(cls, values: list[ParameterValue]) -> list[ParameterValue]:
        names = [v.name for v in values]
        if len(set(names)) != len(names):
            raise ValueError("each parameter may be set once per operation")
        return values


class AddObjectParams(_Params):
    """``{"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration."}``"""

    object_name: ParamPath

    @field_validator("object_name")
    @classmethod
    def _path(cls, name: str) -> str:
        if not _PARTIAL_PATH.fullmatch(name):
            raise ValueError("must be an object path ending with '.'")
        return name


class DeleteObjectParams(_Params):
    """``{"object_name": "InternetGatewayDevice.LANDevice.1.WLANConfiguration.3."}``"""

    object_name: ParamPath

    @field_validator("object_name")
    @classmethod
    def _path(cls, name: str) -> str:
        if not _INSTANCE_PATH.fullmatch(name):
            raise ValueError("must be an object instance path ending with '.<number>.'")
        return name


PARAMETER_MODELS: dict[OperationType, type[_Params]] = {
    OperationType.FIRMWARE_UPDATE: FirmwareUpdateParams,
    OperationType.CONFIGURATION_SYNC: ConfigurationSyncParams,
    OperationType.BACKUP_CONFIGURATION: BackupConfigurationParams,
    OperationType.REBOOT: RebootParams,
    OperationType.FACTORY_RESET: FactoryResetParams,
    OperationType.GET_PARAMETERS: GetParametersParams,
    OperationType.SET_PARAMETERS: SetParametersParams,
    OperationType.ADD_OBJECT: AddObjectParams,
    OperationType.DELETE_OBJECT: DeleteObjectParams,
}


def normalize_operation_type(name: str) -> OperationType:
    """The canonical type for ``name`` or one of its aliases; :class:`InvalidInput` otherwise."""
    if name in OPERATION_ALIASES:
        return OPERATION_ALIASES[name]
    try:
        return OperationType(name)
    except ValueError:
        known = ", ".join([t.value for t in OperationType] + list(OPERATION_ALIASES))
        raise InvalidInput(
            "unknown operation_type",
            [FieldError("operation_type", f"{name!r} is not one of: {known}")],
        ) from None


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    """Turn pydantic's errors into ``FieldError``s whose ``field`` is a dotted path."""
    out = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"])
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        msg = err["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        out.append(FieldError(field, msg))
    return out


def validate_parameters(op_type: OperationType, parameters: object) -> dict[str, Any]:
    """Validate ``parameters`` for ``op_type``; returns them with defaults filled in."""
    if not isinstance(parameters, dict):
        raise InvalidInput(
            "invalid parameters", [FieldError("parameters", "must be a JSON object")]
        )
    try:
        model = PARAMETER_MODELS[op_type].model_validate(parameters)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid parameters for {op_type.value}", field_errors(exc, "parameters")
        ) from None
    return model.model_dump(mode="json", exclude_none=True)
