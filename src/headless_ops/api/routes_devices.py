"""``/inventory_device/``: the device inventory."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from headless_ops.api.body import read_json_object
from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, error_doc, json_request_body
from headless_ops.api.pagination import page_links
from headless_ops.api.schemas import DeviceList, DeviceOut, render_device
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.cwmp.store import CwmpStore
from headless_ops.domain.devices import DeviceStatus, Protocol
from headless_ops.errors import FieldError, InvalidInput
from headless_ops.services.devices import DeviceUpdate, NewDevice
from headless_ops.store.devices import DeviceFilter

__all__ = ["router"]

router = APIRouter(prefix="/inventory_device", tags=["inventory"])

ReadDev = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]
WriteDev = Annotated[Principal, Depends(require(Scope.DEVICES_WRITE))]


@router.get(
    "/",
    operation_id="list_devices",
    summary="List devices",
    response_model=DeviceList,
    responses={400: error_doc("Invalid query parameter"), **AUTH_RESPONSES},
)
async def list_devices(
    request: Request,
    runtime: RuntimeDep,
    principal: ReadDev,
    name: Annotated[str | None, Query(max_length=128)] = None,
    protocol: Protocol | None = None,
    status: DeviceStatus | None = None,
    label: Annotated[str | None, Query(description="key=value", max_length=320)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> JSONResponse:
    label_pair = None
    if label is not None:
        key, sep, value = label.partition("=")
        if not sep or not key:
            raise InvalidInput("invalid label filter", [FieldError("label", "expected key=value")])
        label_pair = (key, value)
    flt = DeviceFilter(
        name=name,
        protocol=protocol.value if protocol else None,
        status=status.value if status else None,
        label=label_pair,
    )
    count, page = await runtime.devices.list(principal.tenant_id, flt, limit, offset)
    reported = await CwmpStore(runtime.db).reported(
        principal.tenant_id, [d.id for d in page if d.protocol == "cwmp"]
    )
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [render_device(d, runtime.box, reported.get(d.id)) for d in page],
        }
    )


@router.post(
    "/",
    operation_id="create_device",
    summary="Add a device",
    status_code=201,
    response_model=DeviceOut,
    openapi_extra={"requestBody": json_request_body(NewDevice)},
    responses={
        201: {"description": "Created", "headers": {"Location": {"schema": {"type": "string"}}}},
        400: error_doc("Invalid device or malformed JSON"),
        **AUTH_RESPONSES,
        409: error_doc("A device with this id or name exists"),
        413: error_doc("Request body too large"),
        415: error_doc("Unsupported Content-Type"),
    },
)
async def create_device(request: Request, runtime: RuntimeDep, principal: WriteDev) -> JSONResponse:
    new = runtime.devices.parse_new(await read_json_object(request))
    record = await runtime.devices.create(principal.tenant_id, new)
    location = str(request.url_for("get_device", device_id=record.id))
    return JSONResponse(
        render_device(record, runtime.box), status_code=201, headers={"Location": location}
    )


@router.get(
    "/{device_id}/",
    operation_id="get_device",
    name="get_device",
    summary="Read a device",
    response_model=DeviceOut,
    responses={**AUTH_RESPONSES, 404: error_doc("No such device")},
)
async def get_device(device_id: str, runtime: RuntimeDep, principal: ReadDev) -> JSONResponse:
    record = await runtime.devices.get(principal.tenant_id, device_id)
    reported = (
        await CwmpStore(runtime.db).reported(principal.tenant_id, [record.id])
        if record.protocol == "cwmp"
        else {}
    )
    return JSONResponse(render_device(record, runtime.box, reported.get(record.id)))


@router.patch(
    "/{device_id}/",
    operation_id="update_device",
    summary="Change a device",
    response_model=DeviceOut,
    openapi_extra={"requestBody": json_request_body(DeviceUpdate)},
    responses={
        400: error_doc("Invalid update or malformed JSON"),
        **AUTH_RESPONSES,
        404: error_doc("No such device"),
        409: error_doc("The new name is taken"),
        413: error_doc("Request body too large"),
        415: error_doc("Unsupported Content-Type"),
    },
)
async def update_device(
    device_id: str, request: Request, runtime: RuntimeDep, principal: WriteDev
) -> JSONResponse:
    change = runtime.devices.parse_update(await read_json_object(request))
    record = await runtime.devices.update(principal.tenant_id, device_id, change)
    return JSONResponse(render_device(record, runtime.box))


@router.delete(
    "/{device_id}/",
    operation_id="delete_device",
    summary="Remove a device",
    status_code=204,
    response_class=Response,
    responses={
        **AUTH_RESPONSES,
        404: error_doc("No such device"),
        409: error_doc("The device has operations that have not finished"),
    },
)
async def delete_device(device_id: str, runtime: RuntimeDep, principal: WriteDev) -> Response:
    await runtime.devices.delete(principal.tenant_id, device_id)
    return Response(status_code=204)
