"""CWMP (TR-069) SOAP codec: parse and serialize the envelopes of a CWMP session.

Used by both sides: the ACS (``headless_ops.cwmp``) and the CPE simulator.

Parsing is hardened and lenient. Hardened: a size limit before anything else, a refusal
of every DTD before the XML parser runs (so no entity expansion, no external reference
can ever be reached), illegal XML 1.0 characters stripped, and a nesting-depth limit.
Lenient: prefixes are arbitrary and elements are matched by local name, missing optional
fields take their defaults (``xsi:type`` -> ``xsd:string``, Status -> 0…), and a single
bad list item does not sink the message. Hard failures are kept to what cannot be worked
around (no Body, an Inform without DeviceId/OUI/SerialNumber).

Serializing uses string templates, because CPE parsers are fragile (reference §2.4): all
five prefixes declared on the Envelope, ``soap-env:``/``cwmp:`` everywhere, never a
default namespace, the CPE's own cwmp namespace echoed.
"""

from __future__ import annotations

import codecs
import functools
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from headless_ops.cwmp.messages import (
    MESSAGE_TYPES,
    UNKNOWN_TIME,
    AddObject,
    AddObjectResponse,
    AutonomousTransferComplete,
    AutonomousTransferCompleteResponse,
    CwmpFault,
    DeleteObject,
    DeleteObjectResponse,
    DeviceId,
    Download,
    DownloadResponse,
    EventStruct,
    FactoryReset,
    FactoryResetResponse,
    GetParameterNames,
    GetParameterNamesResponse,
    GetParameterValues,
    GetParameterValuesResponse,
    GetRPCMethods,
    GetRPCMethodsResponse,
    Inform,
    InformResponse,
    Message,
    ParameterInfo,
    ParameterValue,
    Reboot,
    RebootResponse,
    RequestDownload,
    RequestDownloadResponse,
    ScheduleInform,
    ScheduleInformResponse,
    SetParameterValues,
    SetParameterValuesFault,
    SetParameterValuesResponse,
    TransferComplete,
    TransferCompleteResponse,
    UnknownMethod,
    Upload,
    UploadResponse,
)

__all__ = [
    "CWMP_1_0",
    "CWMP_1_1",
    "CWMP_1_2",
    "FAULT_STRINGS",
    "MAX_DEPTH",
    "MAX_ENVELOPE_BYTES",
    "MESSAGE_TYPES",
    "SOAP_ENC",
    "SOAP_ENV",
    "UNKNOWN_TIME",
    "XSD",
    "XSI",
    "AddObject",
    "AddObjectResponse",
    "AutonomousTransferComplete",
    "AutonomousTransferCompleteResponse",
    "CwmpFault",
    "DeleteObject",
    "DeleteObjectResponse",
    "DeviceId",
    "Download",
    "DownloadResponse",
    "Envelope",
    "EventStruct",
    "FactoryReset",
    "FactoryResetResponse",
    "GetParameterNames",
    "GetParameterNamesResponse",
    "GetParameterValues",
    "GetParameterValuesResponse",
    "GetRPCMethods",
    "GetRPCMethodsResponse",
    "Inform",
    "InformResponse",
    "Message",
    "ParameterInfo",
    "ParameterValue",
    "Reboot",
    "RebootResponse",
    "RequestDownload",
    "RequestDownloadResponse",
    "ScheduleInform",
    "ScheduleInformResponse",
    "SetParameterValues",
    "SetParameterValuesFault",
    "SetParameterValuesResponse",
    "SoapError",
    "TransferComplete",
    "TransferCompleteResponse",
    "UnknownMethod",
    "Upload",
    "UploadResponse",
    "device_key",
    "fault_class",
    "parse",
    "serialize",
]

CWMP_1_0 = "urn:dslforum-org:cwmp-1-0"
CWMP_1_1 = "urn:dslforum-org:cwmp-1-1"
CWMP_1_2 = "urn:dslforum-org:cwmp-1-2"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
SOAP_ENC = "http://schemas.xmlsoap.org/soap/encoding/"
XSD = "http://www.w3.org/2001/XMLSchema"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
MAX_ENVELOPE_BYTES = 1024 * 1024
MAX_DEPTH = 32

# Every cwmp namespace starts so; CPEs that invent cwmp-1-3/1-4 get their URI echoed.
_CWMP_NS_PREFIX = "urn:dslforum-org:cwmp-"

FAULT_STRINGS: dict[int, str] = {
    8000: "Method not supported",
    8001: "Request denied (no reason specified)",
    8002: "Internal error",
    8003: "Invalid arguments",
    8004: "Resources exceeded",
    8005: "Retry request",
    8006: "ACS version incompatible with CPE",
    9000: "Method not supported",
    9001: "Request denied (no reason specified)",
    9002: "Internal error",
    9003: "Invalid arguments",
    9004: "Resources exceeded",
    9005: "Invalid parameter name",
    9006: "Invalid parameter type",
    9007: "Invalid parameter value",
    9008: "Attempt to set a non-writable parameter",
    9009: "Notification request rejected",
    9010: "File transfer failure",
    9011: "Upload failure",
    9012: "File transfer server authentication failure",
    9013: "Unsupported protocol for file transfer",
    9014: "File transfer failure: unable to join multicast group",
    9015: "File transfer failure: unable to contact file server",
    9016: "File transfer failure: unable to access file",
    9017: "File transfer failure: unable to complete download",
    9018: "File transfer failure: file corrupted",
    9019: "File transfer failure: file authentication failure",
    9020: "File transfer failure: unable to complete download within specified time windows",
    9021: "Cancelation of file transfer not permitted in current transfer state",
    9022: "Invalid UUID Format",
    9023: "Unknown Execution Environment",
    9024: "Disabled Execution Environment",
    9025: "Deployment Unit to Execution Environment Mismatch",
    9026: "Duplicate Deployment Unit",
    9027: "System Resources Exceeded",
    9028: "Unknown Deployment Unit",
    9029: "Invalid Deployment Unit State",
    9030: "Invalid Deployment Unit Update - Downgrade not permitted",
    9031: "Invalid Deployment Unit Update - Version not specified",
    9032: "Invalid Deployment Unit Update - Version already exists",
}


class SoapError(ValueError):
    """An envelope that is malformed, hostile, too big or too deep; the message says why.

    ``status`` is the HTTP status the ACS should answer with: 413 when too big, else 400.
    """

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(slots=True)
class Envelope:
    """One parsed envelope: the body message and the cwmp header fields.

    ``body`` is None for an empty POST (empty or whitespace body, a bare XML prolog, no
    Envelope element, or an empty Body). ``cwmp_ns`` is the cwmp namespace URI the sender
    used: answer in the same one. ``id`` is the cwmp:ID text, verbatim (may be "").
    """

    body: Message | UnknownMethod | None
    cwmp_ns: str = CWMP_1_0
    id: str | None = None
    hold_requests: bool = False
    session_timeout: int | None = None
    supported_versions: str | None = None
    use_cwmp_version: str | None = None


# ======================================================================================
# Parsing
# ======================================================================================

# Bytes that are never legal in XML 1.0 (C0 controls except TAB, LF, CR). They never occur
# inside a multi-byte UTF-8 sequence, so deleting them before decoding is safe for UTF-8
# and every single-byte ASCII-compatible charset.
_CTRL_BYTES = bytes(b for b in range(32) if b not in (9, 10, 13))
# The same as text, plus the non-characters and surrogates outside the Char production.
_ILLEGAL_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
# Charsets for which the byte-level filter above is valid.
_ASCII_COMPATIBLE = frozenset(
    {"utf-8", "ascii", "latin-1", "iso8859-1", "iso8859-15", "cp1252", "cp1250"}
)
# A character reference is text too: &#2; is as illegal as a raw \x02.
_CHAR_REF = re.compile(r"&#(?:[xX]([0-9a-fA-F]{1,8})|([0-9]{1,10}));")
_DECL_ENCODING = re.compile(rb"""\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_CT_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
# A start tag: "<" followed by anything but "?" (PI) or "!" (comment, CDATA, DOCTYPE).
_ELEMENT_START = re.compile(r"<[^?!]")

_XSI_TYPE = f"{{{XSI}}}type"


def _is_legal_char(code: int) -> bool:
    """The XML 1.0 Char production."""
    if code < 0x20:
        return code in (0x9, 0xA, 0xD)
    return code <= 0xD7FF or 0xE000 <= code <= 0xFFFD or 0x10000 <= code <= 0x10FFFF


def _drop_illegal_char_ref(match: re.Match[str]) -> str:
    hex_digits, dec_digits = match.groups()
    code = int(hex_digits, 16) if hex_digits is not None else int(dec_digits)
    return match.group(0) if _is_legal_char(code) else ""


@functools.lru_cache(maxsize=64)
def _charset_of(content_type: str) -> str | None:
    """The normalised codec name of a Content-Type's charset, or None."""
    match = _CT_CHARSET.search(content_type)
    return _codec_name(match.group(1)) if match else None


def _codec_name(label: str | bytes) -> str | None:
    if isinstance(label, bytes):
        label = label.decode("ascii")
    try:
        info = codecs.lookup(label)
    except LookupError:
        return None
    # codecs.lookup also knows bytes-to-bytes codecs (base64, zlib…): not charsets.
    return info.name if getattr(info, "_is_text_encoding", True) else None


def _decode(data: bytes, content_type: str | None) -> str:
    """Bytes -> text with illegal XML characters removed; never fails."""
    encoding: str | None
    if data.startswith(codecs.BOM_UTF8):
        data, encoding = data[3:], "utf-8"
    elif data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        encoding = "utf-16"  # the codec reads and drops the BOM itself
    else:
        encoding = _charset_of(content_type) if content_type else None
        if encoding is None and b"<?xml" in data[:64]:
            match = _DECL_ENCODING.match(data, 0, 256)
            encoding = _codec_name(match.group(1)) if match else None
    encoding = encoding or "utf-8"
    if encoding in _ASCII_COMPATIBLE:
        data = data.translate(None, _CTRL_BYTES)
        try:
            text = data.decode(encoding, "replace")
        except LookupError:
            text = data.decode("utf-8", "replace")
        if not text.isascii() and ("\ufffe" in text or "\uffff" in text):
            text = _ILLEGAL_CHARS.sub("", text)
    else:
        try:
            text = data.decode(encoding, "replace")
        except (LookupError, UnicodeError, ValueError, TypeError):
            text = data.decode("utf-8", "replace")
        text = _ILLEGAL_CHARS.sub("", text)
    if "&#" in text:
        text = _CHAR_REF.sub(_drop_illegal_char_ref, text)
    return text


def _local(tag: str) -> str:
    """Local name of a ``{uri}local`` tag: prefixes and namespace URIs are arbitrary."""
    return tag.rpartition("}")[2]


def _namespace(tag: str) -> str:
    return tag[1 : tag.index("}")] if tag.startswith("{") else ""


def _fields(element: ET.Element) -> dict[str, ET.Element]:
    """Children by local name (the first of each name wins)."""
    out: dict[str, ET.Element] = {}
    for child in element:
        out.setdefault(_local(child.tag), child)
    return out


def _text(fields: dict[str, ET.Element], name: str, default: str = "") -> str:
    element = fields.get(name)
    if element is None:
        return default
    return element.text or ""


def _stripped(fields: dict[str, ET.Element], name: str, default: str = "") -> str:
    return _text(fields, name, default).strip()


def _int(fields: dict[str, ET.Element], name: str, default: int = 0) -> int:
    element = fields.get(name)
    if element is None or not element.text:
        return default
    try:
        return int(element.text.strip())
    except ValueError:
        return default


def _bool_text(text: str | None, default: bool) -> bool:
    if text is None:
        return default
    word = text.strip().lower()
    if word in ("true", "1"):
        return True
    if word in ("false", "0"):
        return False
    return default


def _bool(fields: dict[str, ET.Element], name: str, default: bool = False) -> bool:
    element = fields.get(name)
    return default if element is None else _bool_text(element.text, default)


def _xsd_type(raw: str | None) -> str:
    """``xsi:type`` value -> ``xsd:<local>``, whatever prefix the sender bound."""
    if not raw:
        return "xsd:string"
    if raw.startswith("xsd:"):
        return raw
    local = raw.rpartition(":")[2].strip()
    return f"xsd:{local}" if local else "xsd:string"


def _parameter_values(array: ET.Element | None) -> list[ParameterValue]:
    """A ParameterValueStruct array; items without a Name are skipped, not fatal."""
    out: list[ParameterValue] = []
    if array is None:
        return out
    for struct in array:
        name: str | None = None
        value_el: ET.Element | None = None
        for child in struct:
            local = _local(child.tag)
            if local == "Name":
                name = (child.text or "").strip()
            elif local == "Value":
                value_el = child
        if not name:
            continue
        if value_el is None:
            out.append(ParameterValue(name, ""))
            continue
        attrib = value_el.attrib
        raw_type = attrib.get(_XSI_TYPE)
        if raw_type is None and attrib:
            # Some CPEs bind the prefix to an older XMLSchema-instance URI.
            raw_type = next((v for k, v in attrib.items() if _local(k) == "type"), None)
        out.append(ParameterValue(name, value_el.text or "", _xsd_type(raw_type)))
    return out


def _strings(array: ET.Element | None) -> list[str]:
    """An xsd:string array; members are taken whatever their element name."""
    if array is None:
        return []
    return [(member.text or "").strip() for member in array]


def _p_inform(el: ET.Element) -> Inform:
    f = _fields(el)
    device = f.get("DeviceId")
    if device is None:
        raise SoapError("Inform without DeviceId")
    d = _fields(device)
    oui = _stripped(d, "OUI")
    serial = _stripped(d, "SerialNumber")
    if not oui or not serial:
        raise SoapError("Inform DeviceId without OUI or SerialNumber")
    device_id = DeviceId(_stripped(d, "Manufacturer"), oui, _stripped(d, "ProductClass"), serial)
    events: list[EventStruct] = []
    event_array = f.get("Event")
    if event_array is not None:
        for struct in event_array:
            e = _fields(struct)
            # Event codes are matched as strings: normalise the whitespace.
            code = " ".join(_text(e, "EventCode").split())
            if code:
                events.append(EventStruct(code, _text(e, "CommandKey")))
    return Inform(
        device_id,
        events,
        max_envelopes=_int(f, "MaxEnvelopes", 1),
        current_time=_stripped(f, "CurrentTime"),
        retry_count=_int(f, "RetryCount"),
        parameters=_parameter_values(f.get("ParameterList")),
    )


def _fault_struct(f: dict[str, ET.Element]) -> tuple[int, str]:
    fault = f.get("FaultStruct")
    if fault is None:
        return 0, ""
    ff = _fields(fault)
    return _int(ff, "FaultCode"), _text(ff, "FaultString")


def _p_transfer_complete(el: ET.Element) -> TransferComplete:
    f = _fields(el)
    code, string = _fault_struct(f)
    return TransferComplete(
        command_key=_text(f, "CommandKey"),
        fault_code=code,
        fault_string=string,
        start_time=_stripped(f, "StartTime"),
        complete_time=_stripped(f, "CompleteTime"),
    )


def _p_autonomous_transfer_complete(el: ET.Element) -> AutonomousTransferComplete:
    f = _fields(el)
    code, string = _fault_struct(f)
    return AutonomousTransferComplete(
        announce_url=_stripped(f, "AnnounceURL"),
        transfer_url=_stripped(f, "TransferURL"),
        is_download=_bool(f, "IsDownload", True),
        file_type=_stripped(f, "FileType"),
        file_size=_int(f, "FileSize"),
        target_file_name=_text(f, "TargetFileName"),
        fault_code=code,
        fault_string=string,
        start_time=_stripped(f, "StartTime"),
        complete_time=_stripped(f, "CompleteTime"),
    )


def _p_request_download(el: ET.Element) -> RequestDownload:
    f = _fields(el)
    args: dict[str, str] = {}
    arg_array = f.get("FileTypeArg")
    if arg_array is not None:
        for struct in arg_array:
            a = _fields(struct)
            name = _stripped(a, "Name")
            if name:
                args[name] = _text(a, "Value")
    return RequestDownload(_stripped(f, "FileType"), args)


def _p_get_rpc_methods_response(el: ET.Element) -> GetRPCMethodsResponse:
    return GetRPCMethodsResponse([m for m in _strings(_fields(el).get("MethodList")) if m])


def _p_get_parameter_values(el: ET.Element) -> GetParameterValues:
    return GetParameterValues(_strings(_fields(el).get("ParameterNames")))


def _p_set_parameter_values(el: ET.Element) -> SetParameterValues:
    f = _fields(el)
    return SetParameterValues(_parameter_values(f.get("ParameterList")), _text(f, "ParameterKey"))


def _p_get_parameter_names(el: ET.Element) -> GetParameterNames:
    f = _fields(el)
    return GetParameterNames(_stripped(f, "ParameterPath"), _bool(f, "NextLevel"))


def _p_add_object(el: ET.Element) -> AddObject:
    f = _fields(el)
    return AddObject(_stripped(f, "ObjectName"), _text(f, "ParameterKey"))


def _p_delete_object(el: ET.Element) -> DeleteObject:
    f = _fields(el)
    return DeleteObject(_stripped(f, "ObjectName"), _text(f, "ParameterKey"))


def _p_download(el: ET.Element) -> Download:
    f = _fields(el)
    return Download(
        command_key=_text(f, "CommandKey"),
        file_type=_stripped(f, "FileType"),
        url=_stripped(f, "URL"),
        username=_text(f, "Username"),
        password=_text(f, "Password"),
        file_size=_int(f, "FileSize"),
        target_file_name=_text(f, "TargetFileName"),
        delay_seconds=_int(f, "DelaySeconds"),
        success_url=_stripped(f, "SuccessURL"),
        failure_url=_stripped(f, "FailureURL"),
    )


def _p_upload(el: ET.Element) -> Upload:
    f = _fields(el)
    return Upload(
        command_key=_text(f, "CommandKey"),
        file_type=_stripped(f, "FileType"),
        url=_stripped(f, "URL"),
        username=_text(f, "Username"),
        password=_text(f, "Password"),
        delay_seconds=_int(f, "DelaySeconds"),
    )


def _p_get_parameter_names_response(el: ET.Element) -> GetParameterNamesResponse:
    out: list[ParameterInfo] = []
    array = _fields(el).get("ParameterList")
    if array is not None:
        for struct in array:
            s = _fields(struct)
            name = _stripped(s, "Name")
            if name:
                out.append(ParameterInfo(name, _bool(s, "Writable")))
    return GetParameterNamesResponse(out)


def _p_download_response(el: ET.Element) -> DownloadResponse:
    f = _fields(el)
    return DownloadResponse(
        _int(f, "Status"),
        _stripped(f, "StartTime") or UNKNOWN_TIME,
        _stripped(f, "CompleteTime") or UNKNOWN_TIME,
    )


def _p_upload_response(el: ET.Element) -> UploadResponse:
    f = _fields(el)
    return UploadResponse(
        _int(f, "Status"),
        _stripped(f, "StartTime") or UNKNOWN_TIME,
        _stripped(f, "CompleteTime") or UNKNOWN_TIME,
    )


def _p_cwmp_fault(fault: ET.Element, faultcode: str) -> CwmpFault:
    """The cwmp:Fault element (FaultCode, FaultString, SetParameterValuesFault*)."""
    f = _fields(fault)
    spv_faults: list[SetParameterValuesFault] = []
    for child in fault:
        if _local(child.tag) == "SetParameterValuesFault":
            c = _fields(child)
            spv_faults.append(
                SetParameterValuesFault(
                    _stripped(c, "ParameterName"), _int(c, "FaultCode"), _text(c, "FaultString")
                )
            )
    return CwmpFault(_int(f, "FaultCode"), _text(f, "FaultString"), spv_faults, faultcode)


def _p_fault(el: ET.Element) -> tuple[CwmpFault, str | None]:
    """A body Fault -> (CwmpFault, namespace of the cwmp:Fault element if any)."""
    f = _fields(el)
    if "FaultCode" in f:  # a bare cwmp:Fault straight in the Body: accept it too
        return _p_cwmp_fault(el, "Client"), _namespace(el.tag)
    # SOAP allows "soap-env:Client" or "Client"; keep the part after the prefix.
    faultcode = _stripped(f, "faultcode").rpartition(":")[2] or "Client"
    detail = f.get("detail")
    fault = None if detail is None else _fields(detail).get("Fault")
    if fault is None:
        return CwmpFault(0, _text(f, "faultstring"), [], faultcode), None
    return _p_cwmp_fault(fault, faultcode), _namespace(fault.tag)


def _status_only(
    cls: type[SetParameterValuesResponse] | type[DeleteObjectResponse],
) -> Callable[[ET.Element], Message]:
    def parse_status(el: ET.Element) -> Message:
        return cls(_int(_fields(el), "Status"))

    return parse_status


def _empty(cls: Callable[[], Message]) -> Callable[[ET.Element], Message]:
    def parse_empty(el: ET.Element) -> Message:
        return cls()

    return parse_empty


_PARSERS: dict[str, Callable[[ET.Element], Message]] = {
    "Inform": _p_inform,
    "TransferComplete": _p_transfer_complete,
    "AutonomousTransferComplete": _p_autonomous_transfer_complete,
    "GetRPCMethods": _empty(GetRPCMethods),
    "RequestDownload": _p_request_download,
    "InformResponse": lambda el: InformResponse(_int(_fields(el), "MaxEnvelopes", 1)),
    "TransferCompleteResponse": _empty(TransferCompleteResponse),
    "AutonomousTransferCompleteResponse": _empty(AutonomousTransferCompleteResponse),
    "GetRPCMethodsResponse": _p_get_rpc_methods_response,
    "RequestDownloadResponse": _empty(RequestDownloadResponse),
    "GetParameterValues": _p_get_parameter_values,
    "SetParameterValues": _p_set_parameter_values,
    "GetParameterNames": _p_get_parameter_names,
    "AddObject": _p_add_object,
    "DeleteObject": _p_delete_object,
    "Reboot": lambda el: Reboot(_text(_fields(el), "CommandKey")),
    "FactoryReset": _empty(FactoryReset),
    "Download": _p_download,
    "Upload": _p_upload,
    "ScheduleInform": lambda el: ScheduleInform(
        _int(_fields(el), "DelaySeconds"), _text(_fields(el), "CommandKey")
    ),
    "GetParameterValuesResponse": lambda el: GetParameterValuesResponse(
        _parameter_values(_fields(el).get("ParameterList"))
    ),
    "SetParameterValuesResponse": _status_only(SetParameterValuesResponse),
    "GetParameterNamesResponse": _p_get_parameter_names_response,
    "AddObjectResponse": lambda el: AddObjectResponse(
        _int(_fields(el), "InstanceNumber"), _int(_fields(el), "Status")
    ),
    "DeleteObjectResponse": _status_only(DeleteObjectResponse),
    "RebootResponse": _empty(RebootResponse),
    "FactoryResetResponse": _empty(FactoryResetResponse),
    "DownloadResponse": _p_download_response,
    "UploadResponse": _p_upload_response,
    "ScheduleInformResponse": _empty(ScheduleInformResponse),
}
assert set(_PARSERS) == set(MESSAGE_TYPES)  # every message type has a parser


def _too_deep(root: ET.Element, max_depth: int) -> bool:
    """Whether any element sits deeper than ``max_depth`` (root = 1); iterative, no recursion."""
    level = [root]
    for _ in range(max_depth):
        level = [child for element in level for child in element]
        if not level:
            return False
    return True


def _parse_xml(text: str, max_depth: int) -> ET.Element | None:
    """Text -> root element, or None when there is no element at all (an empty POST)."""
    text = text.lstrip()
    if text.startswith("\ufeff"):
        text = text[1:].lstrip()
    if text.startswith("<?xml"):
        # The declaration is consumed here (its charset was used by _decode), so that the
        # parser below reads exactly the text that was checked, as UTF-8.
        end = text.find("?>")
        if end < 0:
            raise SoapError("malformed XML: unterminated XML declaration")
        text = text[end + 2 :]
    if not text or text.isspace():
        return None
    # Refusing every DTD before expat runs is what makes this parser safe: entities can
    # only be declared in a DTD, so without one there is no entity expansion (billion
    # laughs) and no external reference (XXE). Expat itself would keep expanding after a
    # handler raised; this check costs one substring search.
    if "<!DOCTYPE" in text or "<!ENTITY" in text:
        raise SoapError("DTDs are forbidden: no DOCTYPE, entity declaration or external reference")
    if not text.lstrip().startswith("<"):
        raise SoapError(f"body is not XML: it starts with {text.lstrip()[:20]!r}")
    if _ELEMENT_START.search(text) is None:
        return None  # only a prolog, comments or processing instructions
    # The C parser rather than defusedxml's pure-Python one: about 3x faster (the ACS must
    # take 1,000 Informs/s), and it is safe here because the text it reads was just checked
    # to hold no DTD, and that text is all it reads (str input, declared UTF-8).
    parser = ET.XMLParser(target=ET.TreeBuilder(), encoding="utf-8")  # noqa: S314
    try:
        parser.feed(text)
        root: ET.Element = parser.close()
    except ET.ParseError as exc:
        raise SoapError(f"malformed XML: {exc}") from None
    if _too_deep(root, max_depth):
        raise SoapError(f"XML nested deeper than {max_depth} elements")
    return root


def parse(
    data: bytes,
    *,
    content_type: str | None = None,
    max_bytes: int = MAX_ENVELOPE_BYTES,
    max_depth: int = MAX_DEPTH,
) -> Envelope:
    """Parse one HTTP body into an :class:`Envelope`.

    ``content_type`` is the HTTP header, used only for its charset (then the XML
    declaration, then UTF-8). Raises :class:`SoapError` (``status`` 413 above
    ``max_bytes``, else 400) for a hostile, malformed, too deep or unusable envelope.
    """
    if len(data) > max_bytes:
        raise SoapError(
            f"envelope of {len(data)} bytes exceeds the limit of {max_bytes} bytes", status=413
        )
    root = _parse_xml(_decode(data, content_type), max_depth)
    if root is None or _local(root.tag) != "Envelope":
        return Envelope(None)
    header: ET.Element | None = None
    body: ET.Element | None = None
    for child in root:
        local = _local(child.tag)
        if local == "Body" and body is None:
            body = child
        elif local == "Header" and header is None:
            header = child
    if body is None:
        raise SoapError("SOAP Envelope without a Body")

    envelope = Envelope(None)
    header_ns: str | None = None
    if header is not None:
        for child in header:
            # Header names are matched case-insensitively (GenieACS sees "sessionTimeout").
            name = _local(child.tag).lower()
            if name == "id":
                envelope.id = child.text or ""
                header_ns = _namespace(child.tag)
            elif name == "holdrequests":
                envelope.hold_requests = _bool_text(child.text, False)
            elif name == "sessiontimeout":
                try:
                    envelope.session_timeout = int((child.text or "").strip())
                except ValueError:
                    envelope.session_timeout = None  # a hint only: ignore garbage
            elif name == "supportedcwmpversions":
                envelope.supported_versions = (child.text or "").strip()
            elif name == "usecwmpversion":
                envelope.use_cwmp_version = (child.text or "").strip()
            # NoMoreRequests (Issue 1, deprecated) and unknown headers are ignored.

    method = next(iter(body), None)
    method_ns: str | None = None
    if method is not None:
        name = _local(method.tag)
        if name == "Fault":
            envelope.body, method_ns = _p_fault(method)
        else:
            method_ns = _namespace(method.tag)
            parser = _PARSERS.get(name)
            envelope.body = parser(method) if parser is not None else UnknownMethod(name)
    for ns in (method_ns, header_ns):
        if ns and ns.startswith(_CWMP_NS_PREFIX):
            envelope.cwmp_ns = ns
            break
    return envelope


# ======================================================================================
# Serializing
# ======================================================================================

_NEEDS_ESCAPE = re.compile("[&<>\r\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]")
_NEEDS_ATTR_ESCAPE = re.compile('[&<>"\r\n\t\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff\ud800-\udfff]')


def _esc(text: str) -> str:
    """Escape element text. Illegal XML characters cannot be sent at all and are dropped;
    CR is sent as a reference because parsers turn a literal CR into LF."""
    if _NEEDS_ESCAPE.search(text) is None:
        return text
    text = _ILLEGAL_CHARS.sub("", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _esc_attr(text: str) -> str:
    if _NEEDS_ATTR_ESCAPE.search(text) is None:
        return text
    text = _ILLEGAL_CHARS.sub("", text)
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        .replace('"', "&quot;").replace("\r", "&#13;").replace("\n", "&#10;")
        .replace("\t", "&#9;")
    )  # fmt: skip


@functools.lru_cache(maxsize=16)
def _head(cwmp_ns: str) -> str:
    """The declaration and Envelope start tag for one cwmp namespace (cached)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f'<soap-env:Envelope xmlns:soap-env="{SOAP_ENV}" xmlns:soap-enc="{SOAP_ENC}"'
        f' xmlns:xsd="{XSD}" xmlns:xsi="{XSI}" xmlns:cwmp="{_esc_attr(cwmp_ns)}">'
    )


def _b(value: bool) -> str:
    return "true" if value else "false"


def _s_parameter_values(parameters: list[ParameterValue]) -> str:
    items = "".join(
        [
            f"<ParameterValueStruct><Name>{_esc(p.name)}</Name>"
            f'<Value xsi:type="{_esc_attr(_xsd_type(p.type))}">{_esc(p.value)}</Value>'
            "</ParameterValueStruct>"
            for p in parameters
        ]
    )
    return (
        f'<ParameterList soap-enc:arrayType="cwmp:ParameterValueStruct[{len(parameters)}]">'
        f"{items}</ParameterList>"
    )


def _s_strings(tag: str, values: list[str]) -> str:
    items = "".join([f"<string>{_esc(v)}</string>" for v in values])
    return f'<{tag} soap-enc:arrayType="xsd:string[{len(values)}]">{items}</{tag}>'


def _s_fault_struct(code: int, string: str) -> str:
    return f"<FaultStruct><FaultCode>{code}</FaultCode><FaultString>{_esc(string)}</FaultString></FaultStruct>"


def _s_inform(m: Inform) -> str:
    d = m.device_id
    events = "".join(
        [
            f"<EventStruct><EventCode>{_esc(e.code)}</EventCode>"
            f"<CommandKey>{_esc(e.command_key)}</CommandKey></EventStruct>"
            for e in m.events
        ]
    )
    return (
        f"<DeviceId><Manufacturer>{_esc(d.manufacturer)}</Manufacturer><OUI>{_esc(d.oui)}</OUI>"
        f"<ProductClass>{_esc(d.product_class)}</ProductClass>"
        f"<SerialNumber>{_esc(d.serial_number)}</SerialNumber></DeviceId>"
        f'<Event soap-enc:arrayType="cwmp:EventStruct[{len(m.events)}]">{events}</Event>'
        f"<MaxEnvelopes>{m.max_envelopes}</MaxEnvelopes>"
        f"<CurrentTime>{_esc(m.current_time)}</CurrentTime>"
        f"<RetryCount>{m.retry_count}</RetryCount>" + _s_parameter_values(m.parameters)
    )


def _s_transfer_complete(m: TransferComplete) -> str:
    return (
        f"<CommandKey>{_esc(m.command_key)}</CommandKey>"
        + _s_fault_struct(m.fault_code, m.fault_string)
        + f"<StartTime>{_esc(m.start_time)}</StartTime>"
        f"<CompleteTime>{_esc(m.complete_time)}</CompleteTime>"
    )


def _s_autonomous_transfer_complete(m: AutonomousTransferComplete) -> str:
    return (
        f"<AnnounceURL>{_esc(m.announce_url)}</AnnounceURL>"
        f"<TransferURL>{_esc(m.transfer_url)}</TransferURL>"
        f"<IsDownload>{_b(m.is_download)}</IsDownload>"
        f"<FileType>{_esc(m.file_type)}</FileType><FileSize>{m.file_size}</FileSize>"
        f"<TargetFileName>{_esc(m.target_file_name)}</TargetFileName>"
        + _s_fault_struct(m.fault_code, m.fault_string)
        + f"<StartTime>{_esc(m.start_time)}</StartTime>"
        f"<CompleteTime>{_esc(m.complete_time)}</CompleteTime>"
    )


def _s_request_download(m: RequestDownload) -> str:
    args = "".join(
        [
            f"<ArgStruct><Name>{_esc(k)}</Name><Value>{_esc(v)}</Value></ArgStruct>"
            for k, v in m.args.items()
        ]
    )
    return (
        f"<FileType>{_esc(m.file_type)}</FileType>"
        f'<FileTypeArg soap-enc:arrayType="cwmp:ArgStruct[{len(m.args)}]">{args}</FileTypeArg>'
    )


def _s_get_parameter_names_response(m: GetParameterNamesResponse) -> str:
    items = "".join(
        [
            f"<ParameterInfoStruct><Name>{_esc(p.name)}</Name>"
            f"<Writable>{_b(p.writable)}</Writable></ParameterInfoStruct>"
            for p in m.parameters
        ]
    )
    return (
        f'<ParameterList soap-enc:arrayType="cwmp:ParameterInfoStruct[{len(m.parameters)}]">'
        f"{items}</ParameterList>"
    )


def _s_download(m: Download) -> str:
    return (
        f"<CommandKey>{_esc(m.command_key)}</CommandKey><FileType>{_esc(m.file_type)}</FileType>"
        f"<URL>{_esc(m.url)}</URL><Username>{_esc(m.username)}</Username>"
        f"<Password>{_esc(m.password)}</Password><FileSize>{m.file_size}</FileSize>"
        f"<TargetFileName>{_esc(m.target_file_name)}</TargetFileName>"
        f"<DelaySeconds>{m.delay_seconds}</DelaySeconds>"
        f"<SuccessURL>{_esc(m.success_url)}</SuccessURL>"
        f"<FailureURL>{_esc(m.failure_url)}</FailureURL>"
    )


def _s_upload(m: Upload) -> str:
    return (
        f"<CommandKey>{_esc(m.command_key)}</CommandKey><FileType>{_esc(m.file_type)}</FileType>"
        f"<URL>{_esc(m.url)}</URL><Username>{_esc(m.username)}</Username>"
        f"<Password>{_esc(m.password)}</Password><DelaySeconds>{m.delay_seconds}</DelaySeconds>"
    )


def _s_transfer_response(m: DownloadResponse | UploadResponse) -> str:
    return (
        f"<Status>{m.status}</Status><StartTime>{_esc(m.start_time)}</StartTime>"
        f"<CompleteTime>{_esc(m.complete_time)}</CompleteTime>"
    )


def _method_body(message: Message) -> str:
    """The children of the method element."""
    match message:
        case Inform():
            return _s_inform(message)
        case TransferComplete():
            return _s_transfer_complete(message)
        case AutonomousTransferComplete():
            return _s_autonomous_transfer_complete(message)
        case RequestDownload():
            return _s_request_download(message)
        case InformResponse():
            return f"<MaxEnvelopes>{message.max_envelopes}</MaxEnvelopes>"
        case GetRPCMethodsResponse():
            return _s_strings("MethodList", message.methods)
        case GetParameterValues():
            return _s_strings("ParameterNames", message.names)
        case SetParameterValues():
            return (
                _s_parameter_values(message.parameters)
                + f"<ParameterKey>{_esc(message.parameter_key)}</ParameterKey>"
            )
        case GetParameterNames():
            return (
                f"<ParameterPath>{_esc(message.path)}</ParameterPath>"
                f"<NextLevel>{_b(message.next_level)}</NextLevel>"
            )
        case AddObject() | DeleteObject():
            return (
                f"<ObjectName>{_esc(message.object_name)}</ObjectName>"
                f"<ParameterKey>{_esc(message.parameter_key)}</ParameterKey>"
            )
        case Reboot():
            return f"<CommandKey>{_esc(message.command_key)}</CommandKey>"
        case Download():
            return _s_download(message)
        case Upload():
            return _s_upload(message)
        case ScheduleInform():
            return (
                f"<DelaySeconds>{message.delay_seconds}</DelaySeconds>"
                f"<CommandKey>{_esc(message.command_key)}</CommandKey>"
            )
        case GetParameterValuesResponse():
            return _s_parameter_values(message.parameters)
        case SetParameterValuesResponse() | DeleteObjectResponse():
            return f"<Status>{message.status}</Status>"
        case GetParameterNamesResponse():
            return _s_get_parameter_names_response(message)
        case AddObjectResponse():
            return (
                f"<InstanceNumber>{message.instance_number}</InstanceNumber>"
                f"<Status>{message.status}</Status>"
            )
        case DownloadResponse() | UploadResponse():
            return _s_transfer_response(message)
        case _:
            return ""  # the methods without arguments


def _fault(message: CwmpFault) -> str:
    spv = "".join(
        [
            f"<SetParameterValuesFault><ParameterName>{_esc(f.name)}</ParameterName>"
            f"<FaultCode>{f.code}</FaultCode><FaultString>{_esc(f.string)}</FaultString>"
            "</SetParameterValuesFault>"
            for f in message.set_parameter_values_faults
        ]
    )
    return (
        f"<soap-env:Fault><faultcode>{_esc(message.faultcode)}</faultcode>"
        "<faultstring>CWMP fault</faultstring><detail><cwmp:Fault>"
        f"<FaultCode>{message.code}</FaultCode><FaultString>{_esc(message.string)}</FaultString>"
        f"{spv}</cwmp:Fault></detail></soap-env:Fault>"
    )


def serialize(
    message: Message | None,
    *,
    cwmp_ns: str = CWMP_1_0,
    id: str | None = None,  # named after the cwmp:ID header it fills
    hold_requests: bool | None = None,
    use_cwmp_version: str | None = None,
    session_timeout: int | None = None,
    supported_versions: str | None = None,
) -> bytes:
    """Serialize one message into a UTF-8 envelope; ``None`` -> ``b""`` (an empty body).

    Pass the ``cwmp_ns`` the peer used. A header is written only for the fields given:
    ``cwmp:ID`` and ``cwmp:HoldRequests``/``cwmp:UseCWMPVersion`` with
    ``mustUnderstand="1"``, ``SessionTimeout``/``SupportedCWMPVersions`` with ``"0"``.
    """
    if message is None:
        return b""
    parts = [_head(cwmp_ns)]
    header = []
    if id is not None:
        header.append(f'<cwmp:ID soap-env:mustUnderstand="1">{_esc(id)}</cwmp:ID>')
    if hold_requests is not None:
        header.append(
            f'<cwmp:HoldRequests soap-env:mustUnderstand="1">{_b(hold_requests)}'
            "</cwmp:HoldRequests>"
        )
    if session_timeout is not None:
        header.append(
            f'<cwmp:SessionTimeout soap-env:mustUnderstand="0">{int(session_timeout)}'
            "</cwmp:SessionTimeout>"
        )
    if supported_versions is not None:
        header.append(
            f'<cwmp:SupportedCWMPVersions soap-env:mustUnderstand="0">{_esc(supported_versions)}'
            "</cwmp:SupportedCWMPVersions>"
        )
    if use_cwmp_version is not None:
        header.append(
            f'<cwmp:UseCWMPVersion soap-env:mustUnderstand="1">{_esc(use_cwmp_version)}'
            "</cwmp:UseCWMPVersion>"
        )
    if header:
        parts.append("<soap-env:Header>")
        parts.extend(header)
        parts.append("</soap-env:Header>")
    parts.append("<soap-env:Body>")
    if isinstance(message, CwmpFault):
        parts.append(_fault(message))
    else:
        name = type(message).__name__
        parts.append(f"<cwmp:{name}>{_method_body(message)}</cwmp:{name}>")
    parts.append("</soap-env:Body></soap-env:Envelope>")
    return "".join(parts).encode("utf-8")


# ======================================================================================
# Device key and fault classes
# ======================================================================================

_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_]")


def _key_escape(match: re.Match[str]) -> str:
    return "".join(f"%{b:02X}" for b in match.group(0).encode("utf-8", "surrogatepass"))


def device_key(device_id: DeviceId) -> str:
    """``OUI-ProductClass-SerialNumber``, or ``OUI-SerialNumber`` without a ProductClass.

    Every character outside ``[A-Za-z0-9_]`` of each part is percent-encoded (its UTF-8
    bytes, upper-case hex), so "-" inside a part cannot be confused with the separator.
    """
    parts = [device_id.oui, device_id.product_class, device_id.serial_number]
    if not device_id.product_class:
        del parts[1]
    return "-".join(_KEY_UNSAFE.sub(_key_escape, part) for part in parts)


_RETRYABLE = frozenset({8002, 8004, 8005, 9002, 9010, 9011, 9014, 9015, 9017, 9018, 9020, 9027})
_ADAPT = frozenset({9004, 9005, 9006})


def fault_class(code: int) -> Literal["retryable", "permanent", "adapt"]:
    """How the scheduler should treat a CWMP fault (the reference's §4.2 table).

    ``retryable``: retry with backoff and an attempt cap (9002, 9010, 9011, 9014, 9015,
    9017, 9018 once, 9020, 9027; and the ACS's 8002/8004/8005). ``adapt``: change the
    request first (9004 split the batch, 9005 rediscover the path, 9006 fix the type),
    then retry once. ``permanent``: everything else, including the reserved 9033-9799
    and vendor 9800-9899 ranges and codes outside any range.
    """
    if code in _RETRYABLE:
        return "retryable"
    if code in _ADAPT:
        return "adapt"
    return "permanent"
