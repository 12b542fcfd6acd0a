"""CWMP message dataclasses: one class per RPC element, named after its local name.

Re-exported by :mod:`headless_ops.cwmp.soap`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

# The Unknown Time of TR-069: what a CPE reports for a time it does not know.
UNKNOWN_TIME = "0001-01-01T00:00:00Z"


@dataclass(slots=True)
class ParameterValue:
    """One ParameterValueStruct.

    ``value`` is always the wire text; ``type`` is the ``xsi:type`` normalised to the
    ``xsd:`` prefix (``xsd:string``, ``xsd:unsignedInt``, ``xsd:boolean``…).
    """

    name: str
    value: str
    type: str = "xsd:string"


@dataclass(slots=True)
class ParameterInfo:
    """One ParameterInfoStruct of a GetParameterNamesResponse (objects end in ".")."""

    name: str
    writable: bool


@dataclass(slots=True)
class DeviceId:
    """The DeviceIdStruct of an Inform; see ``device_key`` for the key built from it."""

    manufacturer: str
    oui: str
    product_class: str
    serial_number: str


@dataclass(slots=True)
class EventStruct:
    """One Inform event, e.g. ``1 BOOT`` or ``M Reboot`` with its command key."""

    code: str
    command_key: str = ""


@dataclass(slots=True)
class SetParameterValuesFault:
    """A per-parameter fault inside the cwmp:Fault of a failed SetParameterValues."""

    name: str
    code: int
    string: str


# ---- CPE -> ACS requests -------------------------------------------------------------


@dataclass(slots=True)
class Inform:
    """CPE -> ACS: opens every session."""

    device_id: DeviceId
    events: list[EventStruct]
    max_envelopes: int = 1
    current_time: str = ""
    retry_count: int = 0
    parameters: list[ParameterValue] = field(default_factory=list)


@dataclass(slots=True)
class TransferComplete:
    """CPE -> ACS: the end of a Download/Upload the ACS asked for (fault_code 0 = success)."""

    command_key: str
    fault_code: int = 0
    fault_string: str = ""
    start_time: str = ""
    complete_time: str = ""


@dataclass(slots=True)
class AutonomousTransferComplete:
    """CPE -> ACS: the end of a transfer the ACS did not ask for (no command key)."""

    announce_url: str = ""
    transfer_url: str = ""
    is_download: bool = True
    file_type: str = ""
    file_size: int = 0
    target_file_name: str = ""
    fault_code: int = 0
    fault_string: str = ""
    start_time: str = ""
    complete_time: str = ""


@dataclass(slots=True)
class GetRPCMethods:
    """Either direction: ask the peer which RPCs it supports."""


@dataclass(slots=True)
class RequestDownload:
    """CPE -> ACS: the CPE asks for a file; ``args`` is the FileTypeArg name/value list."""

    file_type: str
    args: dict[str, str] = field(default_factory=dict)


# ---- ACS -> CPE responses ------------------------------------------------------------


@dataclass(slots=True)
class InformResponse:
    """ACS -> CPE: acknowledges the Inform and its events."""

    max_envelopes: int = 1


@dataclass(slots=True)
class TransferCompleteResponse:
    """ACS -> CPE: acknowledges a TransferComplete."""


@dataclass(slots=True)
class AutonomousTransferCompleteResponse:
    """ACS -> CPE: acknowledges an AutonomousTransferComplete."""


@dataclass(slots=True)
class GetRPCMethodsResponse:
    """Either direction: the RPC names the sender supports."""

    methods: list[str]


@dataclass(slots=True)
class RequestDownloadResponse:
    """ACS -> CPE: acknowledges a RequestDownload."""


# ---- ACS -> CPE requests -------------------------------------------------------------


@dataclass(slots=True)
class GetParameterValues:
    """ACS -> CPE: read parameters; a name ending in "." reads the whole subtree."""

    names: list[str]


@dataclass(slots=True)
class SetParameterValues:
    """ACS -> CPE: write typed values atomically; ``parameter_key`` marks the change."""

    parameters: list[ParameterValue]
    parameter_key: str = ""


@dataclass(slots=True)
class GetParameterNames:
    """ACS -> CPE: list the data model below ``path`` (only one level if ``next_level``)."""

    path: str
    next_level: bool


@dataclass(slots=True)
class AddObject:
    """ACS -> CPE: create an instance of the table ``object_name`` (ends in ".")."""

    object_name: str
    parameter_key: str = ""


@dataclass(slots=True)
class DeleteObject:
    """ACS -> CPE: delete the instance ``object_name`` (ends in ".")."""

    object_name: str
    parameter_key: str = ""


@dataclass(slots=True)
class Reboot:
    """ACS -> CPE: reboot; ``command_key`` comes back with the ``M Reboot`` event."""

    command_key: str = ""


@dataclass(slots=True)
class FactoryReset:
    """ACS -> CPE: reset to factory defaults (expect ``0 BOOTSTRAP`` next)."""


@dataclass(slots=True)
class Download:
    """ACS -> CPE: fetch ``url`` (firmware image, configuration…); fields in wire order."""

    command_key: str
    file_type: str
    url: str
    username: str = ""
    password: str = ""
    file_size: int = 0
    target_file_name: str = ""
    delay_seconds: int = 0
    success_url: str = ""
    failure_url: str = ""


@dataclass(slots=True)
class Upload:
    """ACS -> CPE: send a file (configuration, log) to ``url``."""

    command_key: str
    file_type: str
    url: str
    username: str = ""
    password: str = ""
    delay_seconds: int = 0


@dataclass(slots=True)
class ScheduleInform:
    """ACS -> CPE: open a session after ``delay_seconds`` (``3 SCHEDULED``)."""

    delay_seconds: int
    command_key: str = ""


# ---- CPE -> ACS responses ------------------------------------------------------------


@dataclass(slots=True)
class GetParameterValuesResponse:
    """CPE -> ACS: the values read."""

    parameters: list[ParameterValue]


@dataclass(slots=True)
class SetParameterValuesResponse:
    """CPE -> ACS: status 0 applied, 1 committed but applied only after a reboot."""

    status: int


@dataclass(slots=True)
class GetParameterNamesResponse:
    """CPE -> ACS: the names found."""

    parameters: list[ParameterInfo]


@dataclass(slots=True)
class AddObjectResponse:
    """CPE -> ACS: the new instance number and status 0/1."""

    instance_number: int
    status: int


@dataclass(slots=True)
class DeleteObjectResponse:
    """CPE -> ACS: status 0/1."""

    status: int


@dataclass(slots=True)
class RebootResponse:
    """CPE -> ACS: the reboot will follow the end of the session."""


@dataclass(slots=True)
class FactoryResetResponse:
    """CPE -> ACS: the reset will follow the end of the session."""


@dataclass(slots=True)
class DownloadResponse:
    """CPE -> ACS: status 0 done and applied, 1 pending (a TransferComplete follows)."""

    status: int
    start_time: str = UNKNOWN_TIME
    complete_time: str = UNKNOWN_TIME


@dataclass(slots=True)
class UploadResponse:
    """CPE -> ACS: status 0 done, 1 pending (a TransferComplete follows)."""

    status: int
    start_time: str = UNKNOWN_TIME
    complete_time: str = UNKNOWN_TIME


@dataclass(slots=True)
class ScheduleInformResponse:
    """CPE -> ACS: acknowledges a ScheduleInform."""


# ---- faults and unknown methods ------------------------------------------------------


@dataclass(slots=True)
class CwmpFault:
    """A SOAP Fault whose detail holds a cwmp:Fault (either direction).

    ``faultcode`` is the SOAP-layer code, ``Client`` or ``Server``;
    ``set_parameter_values_faults`` is only ever filled for SetParameterValues.
    """

    code: int
    string: str = ""
    set_parameter_values_faults: list[SetParameterValuesFault] = field(default_factory=list)
    faultcode: str = "Client"


@dataclass(slots=True)
class UnknownMethod:
    """A body element the codec does not know (vendor RPC, SPA, Kicked…): answer 8000."""

    name: str


Message: TypeAlias = (
    Inform
    | TransferComplete
    | AutonomousTransferComplete
    | GetRPCMethods
    | RequestDownload
    | InformResponse
    | TransferCompleteResponse
    | AutonomousTransferCompleteResponse
    | GetRPCMethodsResponse
    | RequestDownloadResponse
    | GetParameterValues
    | SetParameterValues
    | GetParameterNames
    | AddObject
    | DeleteObject
    | Reboot
    | FactoryReset
    | Download
    | Upload
    | ScheduleInform
    | GetParameterValuesResponse
    | SetParameterValuesResponse
    | GetParameterNamesResponse
    | AddObjectResponse
    | DeleteObjectResponse
    | RebootResponse
    | FactoryResetResponse
    | DownloadResponse
    | UploadResponse
    | ScheduleInformResponse
    | CwmpFault
)

# RPC local name -> class, for "method not supported" checks. CwmpFault is not an RPC
# (its element is soap-env:Fault), so it is left out.
MESSAGE_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Inform,
        TransferComplete,
        AutonomousTransferComplete,
        GetRPCMethods,
        RequestDownload,
        InformResponse,
        TransferCompleteResponse,
        AutonomousTransferCompleteResponse,
        GetRPCMethodsResponse,
        RequestDownloadResponse,
        GetParameterValues,
        SetParameterValues,
        GetParameterNames,
        AddObject,
        DeleteObject,
        Reboot,
        FactoryReset,
        Download,
        Upload,
        ScheduleInform,
        GetParameterValuesResponse,
        SetParameterValuesResponse,
        GetParameterNamesResponse,
        AddObjectResponse,
        DeleteObjectResponse,
        RebootResponse,
        FactoryResetResponse,
        DownloadResponse,
        UploadResponse,
        ScheduleInformResponse,
    )
}
