"""What each operation type does inside a CWMP session: the RPCs, and what the result says.

A program runs with a :class:`JobContext` (``rpc()`` sends one ACS request and returns the
CPE's response) and ends :class:`Finished` — or :class:`Waiting` for an event of a later
session (the BOOT after a Reboot, the TransferComplete of a Download or Upload), which the
ACS matches by CommandKey. Failures are the helper contract's typed errors, CWMP faults
classified as the reference's fault table says.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from headless_ops.artifacts.templates import RenderError, device_facts, render_context
from headless_ops.cwmp import soap
from headless_ops.domain.operations import XSD_TYPES
from headless_ops.helpers.base import (
    DeviceView,
    HelperError,
    PermanentError,
    RetryableError,
)
from headless_ops.helpers.resources import HelperResources

__all__ = [
    "PROGRAMS",
    "CpeView",
    "Finished",
    "JobContext",
    "RpcFault",
    "Waiting",
    "fault_error",
    "new_command_key",
    "wire_value",
]

GPV_BATCH = 32


@dataclass
class CpeView:
    """What the ACS knows of the CPE in session."""

    device_key: str
    tenant_id: str
    device_id: str
    root: str
    software_version: str | None
    product_class: str
    oui: str
    serial_number: str


class RpcFault(Exception):
    """The CPE answered a request with a CWMP fault."""

    def __init__(self, method: str, fault: soap.CwmpFault) -> None:
        super().__init__(f"{method}: fault {fault.code}")
        self.method = method
        self.fault = fault


@dataclass
class Finished:
    """The operation's attempt is over, with this result."""

    result: dict[str, Any]


@dataclass
class Waiting:
    """Waiting for a later event: ``kind`` is ``boot``, ``bootstrap``, ``transfer``."""

    kind: str
    command_key: str | None
    progress: dict[str, Any] = field(default_factory=dict)


class JobContext(Protocol):
    """What a program may use."""

    operation_id: str
    attempt: int
    operation_type: str
    parameters: dict[str, Any]
    cpe: CpeView
    resources: HelperResources

    async def rpc(self, request: soap.Message) -> soap.Message:
        """Send one ACS request; the CPE's response (a fault raises :class:`RpcFault`)."""
        ...

    async def device(self) -> DeviceView:
        """The inventory device (public and secret connection fields)."""
        ...

    async def transfer(
        self, kind: str, filename: str, image_id: str | None = None
    ) -> tuple[str, str, str]:
        """A per-transfer URL with fresh credentials, recorded on the job before the CPE can
        use them: ``(url, username, password)``."""
        ...


def new_command_key() -> str:
    """A CommandKey unique per attempt (string(32))."""
    return "ho" + secrets.token_hex(12)


def wire_value(value: object) -> str:
    """A JSON value as CWMP wire text (booleans as ``true``/``false``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def fault_error(method: str, fault: soap.CwmpFault) -> HelperError:
    """A CWMP fault as the operation's error, classified per the reference's table."""
    text = fault.string or soap.FAULT_STRINGS.get(fault.code, "")
    message = f"{method}: CWMP fault {fault.code} {text}".rstrip()
    if fault.set_parameter_values_faults:
        message += " — " + "; ".join(
            f"{f.name}: {f.code} {f.string}".rstrip() for f in fault.set_parameter_values_faults
        )
    kind = soap.fault_class(fault.code)
    code = f"cwmp_fault_{fault.code}"
    # "adapt" faults (9004 too big, 9005 unknown name, 9006 wrong type) are adapted to inside
    # the job where the protocol allows (split the batch, re-read the types); one that still
    # reaches here would fail the same way again.
    if kind == "retryable":
        return RetryableError(code, message)
    return PermanentError(code, message)


def _check(response: soap.Message, expected: type) -> Any:
    if not isinstance(response, expected):
        raise RetryableError(
            "invalid_response",
            f"the CPE answered {type(response).__name__} to a {expected.__name__.removesuffix('Response')}",
        )
    return response


async def _gpv(ctx: JobContext, names: list[str]) -> list[soap.ParameterValue]:
    """GetParameterValues in batches; a batch the CPE finds too big (9004) is split."""
    out: list[soap.ParameterValue] = []
    for start in range(0, len(names), GPV_BATCH):
        out.extend(await _gpv_batch(ctx, names[start : start + GPV_BATCH]))
    return out


async def _gpv_batch(ctx: JobContext, names: list[str]) -> list[soap.ParameterValue]:
    try:
        response = await ctx.rpc(soap.GetParameterValues(names=names))
    except RpcFault as exc:
        if exc.fault.code == 9004 and len(names) > 1:
            half = len(names) // 2
            return await _gpv_batch(ctx, names[:half]) + await _gpv_batch(ctx, names[half:])
        raise fault_error("GetParameterValues", exc.fault) from None
    return list(_check(response, soap.GetParameterValuesResponse).parameters)


def _typed(values: list[soap.ParameterValue]) -> dict[str, dict[str, str]]:
    return {v.name: {"value": v.value, "type": v.type.removeprefix("xsd:")} for v in values}


async def get_parameters(ctx: JobContext) -> Finished:
    """GetParameterValues of the names (partial paths allowed); values with their types."""
    values = await _gpv(ctx, list(ctx.parameters["names"]))
    return Finished({"parameters": _typed(values)})


async def _spv(ctx: JobContext, values: list[soap.ParameterValue]) -> tuple[int, str]:
    key = ctx.operation_id[-32:]
    try:
        response = await ctx.rpc(soap.SetParameterValues(parameters=values, parameter_key=key))
    except RpcFault as exc:
        if exc.fault.code != 9006:
            raise fault_error("SetParameterValues", exc.fault) from None
        # Wrong type: take each parameter's type from the CPE itself, then once more.
        types = {v.name: v.type for v in await _gpv(ctx, [v.name for v in values])}
        retyped = [soap.ParameterValue(v.name, v.value, types.get(v.name, v.type)) for v in values]
        if retyped == values:
            raise fault_error("SetParameterValues", exc.fault) from None
        try:
            response = await ctx.rpc(soap.SetParameterValues(parameters=retyped, parameter_key=key))
        except RpcFault as again:
            raise fault_error("SetParameterValues", again.fault) from None
    return _check(response, soap.SetParameterValuesResponse).status, key


async def set_parameters(ctx: JobContext) -> Finished:
    """SetParameterValues with typed values and a ParameterKey. A retry first re-reads: the
    last attempt's change may have been applied though its response was lost."""
    wanted = [
        soap.ParameterValue(
            v["name"], wire_value(v["value"]), XSD_TYPES.get(v.get("type", "string"), "xsd:string")
        )
        for v in ctx.parameters["values"]
    ]
    if ctx.attempt > 1:
        current = {v.name: v.value for v in await _gpv(ctx, [w.name for w in wanted])}
        if all(current.get(w.name) == w.value for w in wanted):
            return Finished(
                {"status": 0, "already_applied": True, "values": {w.name: w.value for w in wanted}}
            )
    status, key = await _spv(ctx, wanted)
    return Finished(
        {
            "status": status,
            "reboot_required": status == 1,
            "parameter_key": key,
            "values": {w.name: w.value for w in wanted},
        }
    )


async def add_object(ctx: JobContext) -> Finished:
    """AddObject: the new instance's number and the CPE's status. A retry after an attempt
    whose AddObject was applied (its answer lost) does not add a second instance: see
    :func:`_applied`."""
    name = str(ctx.parameters["object_name"])
    found = await _ours(ctx, name, 0, await _applied(ctx), {})
    if found is not None:
        return Finished(
            {
                "instance_number": found,
                "object": f"{name}{found}.",
                "status": 0,
                "already_added": True,
            }
        )
    added = await _add(ctx, name, 0)
    return Finished(
        {
            "instance_number": added.instance_number,
            "object": f"{name}{added.instance_number}.",
            "status": added.status,
        }
    )


async def delete_object(ctx: JobContext) -> Finished:
    """DeleteObject; on a retry, an instance already gone counts as deleted."""
    name = str(ctx.parameters["object_name"])
    try:
        response = await ctx.rpc(
            soap.DeleteObject(object_name=name, parameter_key=ctx.operation_id[-32:])
        )
    except RpcFault as exc:
        if exc.fault.code == 9005 and ctx.attempt > 1:
            return Finished({"status": 0, "already_deleted": True})
        raise fault_error("DeleteObject", exc.fault) from None
    return Finished({"status": _check(response, soap.DeleteObjectResponse).status})


async def reboot(ctx: JobContext) -> Waiting:
    """Reboot; completed when the CPE comes back with ``1 BOOT`` / ``M Reboot``."""
    key = new_command_key()
    try:
        _check(await ctx.rpc(soap.Reboot(command_key=key)), soap.RebootResponse)
    except RpcFault as exc:
        raise fault_error("Reboot", exc.fault) from None
    return Waiting("boot", key, {"previous_version": ctx.cpe.software_version})


async def factory_reset(ctx: JobContext) -> Waiting:
    """FactoryReset; completed when the CPE comes back with ``0 BOOTSTRAP``."""
    try:
        _check(await ctx.rpc(soap.FactoryReset()), soap.FactoryResetResponse)
    except RpcFault as exc:
        raise fault_error("FactoryReset", exc.fault) from None
    return Waiting("bootstrap", new_command_key(), {"previous_version": ctx.cpe.software_version})


async def firmware_update(ctx: JobContext) -> Finished | Waiting:
    """Download of the repository's image; completed on TransferComplete and a matching
    SoftwareVersion (checked when the CPE next reports it)."""
    target = str(ctx.parameters["firmware_version"])
    current = ctx.cpe.software_version
    if current == target and not ctx.parameters.get("force", False):
        return Finished(
            {
                "skipped": True,
                "reason": f"the CPE already runs {target}",
                "firmware_version": current,
            }
        )
    image = await ctx.resources.firmware.find(ctx.cpe.tenant_id, target, ctx.cpe.product_class)
    if image is None:
        raise PermanentError(
            "firmware_not_found",
            f"the firmware repository has no image of version {target} for product class "
            f"{ctx.cpe.product_class or 'any'}",
        )
    url, username, password = await ctx.transfer("firmware", image.filename, image.id)
    key = new_command_key()
    request = soap.Download(
        command_key=key,
        file_type="1 Firmware Upgrade Image",
        url=url,
        username=username,
        password=password,
        file_size=image.size,
        target_file_name=image.filename,
    )
    try:
        response = _check(await ctx.rpc(request), soap.DownloadResponse)
    except RpcFault as exc:
        raise fault_error("Download", exc.fault) from None
    progress = {
        "previous_version": current,
        "image_id": image.id,
        "sha256": image.sha256,
        "target": target,
        "download_status": response.status,
    }
    return Waiting("transfer", key, progress)


async def configuration_sync(ctx: JobContext) -> Finished:
    """A ``parameters`` template rendered for the device and applied with SetParameterValues;
    paths with ``{i}`` create an instance first (AddObject). The result lists what changed."""
    name = str(ctx.parameters["config_template"])
    template = await ctx.resources.templates.get(ctx.cpe.tenant_id, name)
    if template is None:
        raise PermanentError("template_not_found", f"no configuration template named {name!r}")
    device = await ctx.device()
    facts = {"software_version": ctx.cpe.software_version, "root": ctx.cpe.root}
    context = render_context(
        device_facts(device), facts, dict(ctx.parameters.get("variables") or {})
    )
    try:
        rendered = template.render_parameters(context)
    except RenderError as exc:
        raise PermanentError("template_error", str(exc)) from None
    added: dict[str, str] = {}
    values: list[soap.ParameterValue] = []
    # What each new instance is to hold, by table: a retry recognises its instances by it.
    wanted: dict[str, dict[str, str]] = {}
    for item in rendered:
        table, _, rest = str(item["name"]).partition("{i}.")
        if rest:
            wanted.setdefault(table, {})[rest] = wire_value(item["value"])
    # A retry reuses the instances an earlier attempt added (see _applied).
    applied = await _applied(ctx) if wanted else _Applied(0, None)
    for item in rendered:
        path = str(item["name"])
        if "{i}" in path:
            table = path.split("{i}", 1)[0]
            if table not in added:
                step = len(added)
                number = await _ours(ctx, table, step, applied, wanted.get(table, {}))
                if number is None:
                    number = (await _add(ctx, table, step)).instance_number
                added[table] = f"{table}{number}."
            path = path.replace(f"{table}{{i}}.", added[table], 1)
        values.append(
            soap.ParameterValue(
                path, wire_value(item["value"]), XSD_TYPES.get(str(item["type"]), "xsd:string")
            )
        )
    existing = [v for v in values if not any(v.name.startswith(a) for a in added.values())]
    before = (
        {v.name: v.value for v in await _gpv(ctx, [v.name for v in existing])} if existing else {}
    )
    changes = [v for v in values if before.get(v.name) != v.value]
    status = 0
    if changes:
        status, _ = await _spv(ctx, changes)
    return Finished(
        {
            "template": name,
            "changed": [
                {"name": v.name, "before": before.get(v.name), "after": v.value} for v in changes
            ],
            "unchanged": len(values) - len(changes),
            "added_objects": sorted(added.values()),
            "status": status,
            "reboot_required": status == 1,
        }
    )


@dataclass(frozen=True, slots=True)
class _Applied:
    """How far an earlier attempt's changes got, as the CPE's ParameterKey tells."""

    #: How many of the program's AddObjects took effect (_ALL_STEPS: its final SPV did too).
    steps: int
    #: The highest instance number of the last applied AddObject's table before it, if known.
    before: int | None


#: :attr:`_Applied.steps` when the program's SPV (after all its AddObjects) was applied.
_ALL_STEPS = 1 << 30


def _add_key(ctx: JobContext, step: int, before: int | None) -> str:
    """The ParameterKey of a program's ``step``-th AddObject (``string(32)``): the operation,
    the step and the table's highest instance number before it (``before``), so that the
    CPE's ParameterKey tells a retry how far an earlier attempt got, and which instance is
    its own."""
    key = f"{ctx.operation_id[-16:]}+a{step}"
    return key if before is None else f"{key}>{before}"


async def _applied(ctx: JobContext) -> _Applied:
    """What this program's earlier attempts applied (nothing, on the first attempt).

    The CPE sets ``ManagementServer.ParameterKey`` to the key of the last SPV, AddObject or
    DeleteObject it applied, and a program sends its AddObjects in order (step 0, 1, ...),
    then its SPV (the operation's own key): a key of step ``n`` means steps 0..n took effect
    although their answers were lost; the SPV's key means all of them did. A CPE that never
    updates its ParameterKey (a known quirk) reads as nothing applied: such a CPE gets the
    instance added again, as before this check.
    """
    if ctx.attempt <= 1:
        return _Applied(0, None)
    name = f"{ctx.cpe.root}ManagementServer.ParameterKey"
    try:
        values = await _gpv(ctx, [name])
    except HelperError:
        return _Applied(0, None)  # unreadable: assume nothing (the add is then repeated)
    key = next((v.value for v in values if v.name == name), "")
    if key == ctx.operation_id[-32:]:
        return _Applied(_ALL_STEPS, None)
    prefix = f"{ctx.operation_id[-16:]}+a"
    if not key.startswith(prefix):
        return _Applied(0, None)
    step, _, before = key[len(prefix) :].partition(">")
    if not step.isdigit():
        return _Applied(0, None)
    return _Applied(int(step) + 1, int(before) if before.isdigit() else None)


async def _ours(
    ctx: JobContext, table: str, step: int, applied: _Applied, wanted: dict[str, str]
) -> int | None:
    """The instance of ``table`` that an earlier attempt's ``step``-th AddObject made, when
    it can be told; None when it was not applied (or cannot be told: then it is added again,
    as a duplicate is safer than configuring someone else's instance).

    - The last applied AddObject's key holds the table's highest instance number before it:
      CPEs number new instances upwards, so the lowest instance above it is ours (others
      added later by someone else are higher still).
    - For another applied step (its key overwritten since), an instance already holding
      every value the program wants in it is taken: the program's SPV put them there.
    """
    if step >= applied.steps:
        return None
    numbers = await _instances(ctx, table)
    if step == applied.steps - 1 and applied.before is not None:
        newer = [n for n in numbers if n > applied.before]
        return min(newer, default=None)
    if not wanted or not numbers:
        return None
    try:
        current = {v.name: v.value for v in await _gpv(ctx, [table])}
    except HelperError:
        return None
    matching = [
        n
        for n in numbers
        if all(current.get(f"{table}{n}.{name}") == value for name, value in wanted.items())
    ]
    return max(matching, default=None)


async def _instances(ctx: JobContext, table: str) -> list[int]:
    """The instance numbers of ``table`` (GetParameterNames, next level)."""
    try:
        response = await ctx.rpc(soap.GetParameterNames(path=table, next_level=True))
    except RpcFault as exc:
        raise fault_error("GetParameterNames", exc.fault) from None
    return [
        int(rest)
        for info in _check(response, soap.GetParameterNamesResponse).parameters
        if info.name.startswith(table) and (rest := info.name[len(table) :].rstrip(".")).isdigit()
    ]


async def _add(ctx: JobContext, table: str, step: int) -> soap.AddObjectResponse:
    # The table's highest instance number goes into the key (see _add_key); a CPE that
    # cannot list the table still gets the AddObject, with a key that says less.
    try:
        before: int | None = max(await _instances(ctx, table), default=0)
    except HelperError:
        before = None
    try:
        response = await ctx.rpc(
            soap.AddObject(object_name=table, parameter_key=_add_key(ctx, step, before))
        )
    except RpcFault as exc:
        raise fault_error("AddObject", exc.fault) from None
    added: soap.AddObjectResponse = _check(response, soap.AddObjectResponse)
    return added


async def backup_configuration(ctx: JobContext) -> Finished | Waiting:
    """Upload of the vendor configuration file to the ACS; when the CPE faults the Upload,
    a dump of every parameter (GetParameterValues of the root) instead."""
    url, username, password = await ctx.transfer("upload", "config")
    key = new_command_key()
    request = soap.Upload(
        command_key=key,
        file_type="1 Vendor Configuration File",
        url=url,
        username=username,
        password=password,
    )
    try:
        response = _check(await ctx.rpc(request), soap.UploadResponse)
    except RpcFault as exc:
        dump = await _gpv(ctx, [ctx.cpe.root])
        text = "".join(f"{v.name}\t{v.type}\t{v.value}\n" for v in dump).encode()
        saved = await _save_backup(ctx, text, "parameter_dump")
        saved["upload_fault"] = f"{exc.fault.code} {exc.fault.string}".strip()
        return Finished(saved)
    return Waiting("transfer", key, {"upload_status": response.status})


async def _save_backup(ctx: JobContext, data: bytes, method: str) -> dict[str, Any]:
    params = ctx.parameters
    return await ctx.resources.backups.save(
        tenant_id=ctx.cpe.tenant_id,
        device_id=ctx.cpe.device_id,
        operation_id=ctx.operation_id,
        data=data,
        location=str(params["backup_location"]),
        compression=bool(params.get("compression", False)),
        retention_days=params.get("retention_days"),
        method=method,
    )


Program = Callable[[JobContext], Awaitable[Finished | Waiting]]

PROGRAMS: dict[str, Program] = {
    "get_parameters": get_parameters,
    "set_parameters": set_parameters,
    "add_object": add_object,
    "delete_object": delete_object,
    "reboot": reboot,
    "factory_reset": factory_reset,
    "firmware_update": firmware_update,
    "configuration_sync": configuration_sync,
    "backup_configuration": backup_configuration,
}
