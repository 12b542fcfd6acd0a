"""Devices: protocols, the connection fields each protocol needs, which of them are secret."""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError, field_validator

from headless_ops.domain.operations import OperationType, field_errors
from headless_ops.errors import InvalidInput

__all__ = [
    "CONNECTION_MODELS",
    "DEFAULT_CAPABILITIES",
    "CwmpConnection",
    "DeviceStatus",
    "Protocol",
    "SshConnection",
    "split_connection",
    "validate_connection",
    "validate_labels",
]


class Protocol(StrEnum):
    """How headless-ops talks to a device."""

    CWMP = "cwmp"
    SSH = "ssh"


class DeviceStatus(StrEnum):
    """Reachability as last observed by the device's helper."""

    ONLINE = "online"
    OFFLINE = "offline"
    UNKNOWN = "unknown"


Port = Annotated[int, Field(ge=1, le=65535, strict=True)]
ShortStr = Annotated[StrictStr, Field(min_length=1, max_length=255)]
Secret = Annotated[StrictStr, Field(min_length=1, max_length=16384)]


class _Connection(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    #: Field names that are write-only and encrypted at rest.
    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset()


class SshConnection(_Connection):
    """``{"host": "10.0.0.1", "port": 22, "username": "admin", "password": "…", "profile": "linux"}``"""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"password", "private_key", "private_key_passphrase"}
    )

    host: ShortStr
    port: Port = 22
    username: ShortStr
    password: Secret | None = None
    private_key: Secret | None = None
    private_key_passphrase: Secret | None = None
    #: Pinned host key (OpenSSH ``known_hosts`` key text); captured on first contact when
    #: ``host_key_policy`` is ``pin_on_first_use``.
    host_key: Annotated[StrictStr, Field(max_length=16384)] | None = None
    host_key_policy: Literal["require", "pin_on_first_use"] = "require"
    #: Platform profile name (``linux``, ``openwrt``, ``ios`` or one of the user's).
    profile: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] = "linux"
    #: Values for the profile's ``{placeholders}`` (paths, commands) on this device.
    profile_vars: Annotated[
        dict[
            Annotated[StrictStr, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")],
            Annotated[StrictStr, Field(max_length=1024)],
        ],
        Field(max_length=64),
    ] = Field(default_factory=dict)
    #: Which firmware images fit this device (matched to the repository's product_class).
    product_class: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9._:\-\[\]%]+", value):
            raise ValueError("must be a host name or IP address")
        return value


class CwmpConnection(_Connection):
    """TR-069 identity and credentials: ``{"oui": "202BC1", "product_class": "BM632w", "serial_number": "…"}``"""

    SECRET_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"cpe_password", "connection_request_password"}
    )

    oui: Annotated[StrictStr, Field(pattern=r"^[0-9A-Fa-f]{6}$")] | None = None
    product_class: Annotated[StrictStr, Field(max_length=64)] | None = None
    serial_number: Annotated[StrictStr, Field(min_length=1, max_length=64)] | None = None
    #: Credentials the CPE presents to the ACS (per device; shared ones are configured).
    cpe_username: ShortStr | None = None
    cpe_password: Secret | None = None
    #: Learned from the CPE's Inform; may be preset.
    connection_request_url: Annotated[StrictStr, Field(max_length=1024)] | None = None
    connection_request_username: ShortStr | None = None
    connection_request_password: Secret | None = None


CONNECTION_MODELS: dict[Protocol, type[_Connection]] = {
    Protocol.SSH: SshConnection,
    Protocol.CWMP: CwmpConnection,
}

#: What each protocol can perform when no helper for it is registered to say otherwise.
DEFAULT_CAPABILITIES: dict[Protocol, frozenset[OperationType]] = {
    Protocol.CWMP: frozenset(OperationType),
    Protocol.SSH: frozenset(
        {
            OperationType.FIRMWARE_UPDATE,
            OperationType.CONFIGURATION_SYNC,
            OperationType.BACKUP_CONFIGURATION,
            OperationType.REBOOT,
            OperationType.GET_PARAMETERS,
        }
    ),
}


def validate_connection(protocol: Protocol, connection: object) -> dict[str, Any]:
    """Validate ``connection`` for ``protocol``; returns it with defaults, ``None``s dropped."""
    if not isinstance(connection, dict):
        raise InvalidInput("invalid connection", [])
    try:
        model = CONNECTION_MODELS[protocol].model_validate(connection)
    except ValidationError as exc:
        raise InvalidInput(
            f"invalid connection for protocol {protocol.value}", field_errors(exc, "connection")
        ) from None
    return model.model_dump(exclude_none=True)


def split_connection(
    protocol: Protocol, connection: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split validated connection fields into (public, secret)."""
    secret_names = CONNECTION_MODELS[protocol].SECRET_FIELDS
    public = {k: v for k, v in connection.items() if k not in secret_names}
    secret = {k: v for k, v in connection.items() if k in secret_names}
    return public, secret


_LABEL_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,62}$")


def validate_labels(labels: object) -> dict[str, str]:
    """Labels are ``{"key": "value"}`` strings; keys are short identifiers."""
    from headless_ops.errors import FieldError

    if not isinstance(labels, dict):
        raise InvalidInput("invalid labels", [FieldError("labels", "must be a JSON object")])
    errors = []
    for key, value in labels.items():
        if not _LABEL_KEY.fullmatch(key):
            errors.append(FieldError(f"labels.{key}", "label keys are letters, digits, . _ / -"))
        elif not isinstance(value, str) or len(value) > 255:
            errors.append(FieldError(f"labels.{key}", "label values are strings of at most 255"))
    if len(labels) > 64:
        errors.append(FieldError("labels", "at most 64 labels"))
    if errors:
        raise InvalidInput("invalid labels", errors)
    return dict(labels)
