"""``/inventory_device/``: the device inventory."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse

from headless_ops.api.body import read_json_object
from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.errors import ErrorBody
from headless_ops.api.pagination import page_links
from headless_ops.api.schemas import DeviceList, DeviceOut, render_device
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.domain.devices import DeviceStatus, Protocol
from headless_ops.errors import FieldError, InvalidInput
from headless_ops.services.devices import DeviceUpdate, NewDevice
from headless_ops.store.devices import DeviceFilter

__all__ = ["router"]

router = APIRouter(prefix="/inventory_device", tags=["inventory"])

ReadDev = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]
WriteDev = Annotated[Principal, Depends(require(Scope.DEVICES_WRITE))]


def _err(description: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": description}


_AUTH: dict[int | str, dict[str, Any]] = {
    401: _err("Missing or invalid Bearer token"),
    403: _err("The token lacks the scope"),
}


def _json_body(model: type[Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    return {"required": True, "content": {"application/json": {"schema": schema}}}


@router.get(
    "/",
    operation_id="list_devices",
    summary="List devices",
    response_model=DeviceList,
    responses={400: _err("Invalid query parameter"), **_AUTH},
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
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [render_device(d, runtime.box) for d in page],
        }
    )


@router.post(
    "/",
    operation_id="create_device",
    summary="Add a device",
    status_code=201,
    response_model=DeviceOut,
    openapi_extra={"requestBody": _json_body(NewDevice)},
    responses={
        201: {"description": "Created", "headers": {"Location": {"schema": {"type": "string"}}}},
        400: _err("Invalid device or malformed JSON"),
        **_AUTH,
        409: _err("A device with this id or name exists"),
        413: _err("Request body too large"),
        415: _err("Unsupported Content-Type"),
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
    responses={**_AUTH, 404: _err("No such device")},
)
async def get_device(device_id: str, runtime: RuntimeDep, principal: ReadDev) -> JSONResponse:
    record = await runtime.devices.get(principal.tenant_id, device_id)
    return JSONResponse(render_device(record, runtime.box))


@router.patch(
    "/{device_id}/",
    operation_id="update_device",
    summary="Change a device",
    response_model=DeviceOut,
    openapi_extra={"requestBody": _json_body(DeviceUpdate)},
    responses={
        400: _err("Invalid update or malformed JSON"),
        **_AUTH,
        404: _err("No such device"),
        409: _err("The new name is taken"),
        413: _err("Request body too large"),
        415: _err("Unsupported Content-Type"),
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
        **_AUTH,
        404: _err("No such device"),
        409: _err("The device has operations that have not finished"),
    },
)
async def delete_device(device_id: str, runtime: RuntimeDep, principal: WriteDev) -> Response:
    await runtime.devices.delete(principal.tenant_id, device_id)
    return Response(status_code=204)
