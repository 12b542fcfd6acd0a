"""``/maintenance_window/``: when devices may be worked on."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from headless_ops.api.body import read_json_object
from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, Responses, error_doc, json_request_body
from headless_ops.api.pagination import page_links
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.services.windows import NewWindow, WindowUpdate

__all__ = ["router"]

router = APIRouter(prefix="/maintenance_window", tags=["maintenance windows"])

ReadW = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]
WriteW = Annotated[Principal, Depends(require(Scope.DEVICES_WRITE))]


class WindowRangeOut(BaseModel):
    """A one-off range."""

    start: str
    end: str


class WindowOut(BaseModel):
    """A maintenance window, with whether it is open now and when operations may next start."""

    name: str
    timezone: str
    cron: str | None
    duration_minutes: int | None
    ranges: list[WindowRangeOut]
    open_now: bool
    next_start: str | None
    created_at: str
    updated_at: str


class WindowList(BaseModel):
    """A page of windows."""

    count: int
    next: str | None
    previous: str | None
    results: list[WindowOut]


_BODY: Responses = {
    400: error_doc("Invalid window or malformed JSON"),
    413: error_doc("Request body too large"),
    415: error_doc("Unsupported Content-Type"),
}


@router.get(
    "/",
    operation_id="list_windows",
    response_model=WindowList,
    responses={400: error_doc("Invalid query parameter"), **AUTH_RESPONSES},
)
async def list_windows(
    request: Request,
    runtime: RuntimeDep,
    principal: ReadW,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> JSONResponse:
    count, rows = await runtime.windows.list(principal.tenant_id, limit, offset)
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [runtime.windows.render(r) for r in rows],
        }
    )


@router.post(
    "/",
    operation_id="create_window",
    status_code=201,
    response_model=WindowOut,
    openapi_extra={"requestBody": json_request_body(NewWindow)},
    responses={
        201: {"description": "Created", "headers": {"Location": {"schema": {"type": "string"}}}},
        **_BODY,
        **AUTH_RESPONSES,
        409: error_doc("The name is taken"),
    },
)
async def create_window(request: Request, runtime: RuntimeDep, principal: WriteW) -> JSONResponse:
    body = runtime.windows.parse(NewWindow, await read_json_object(request))
    row = await runtime.windows.create(principal.tenant_id, body)
    location = str(request.url_for("get_window", name=row.name))
    return JSONResponse(
        runtime.windows.render(row), status_code=201, headers={"Location": location}
    )


@router.get(
    "/{name}/",
    operation_id="get_window",
    name="get_window",
    response_model=WindowOut,
    responses={**AUTH_RESPONSES, 404: error_doc("No such window")},
)
async def get_window(name: str, runtime: RuntimeDep, principal: ReadW) -> JSONResponse:
    return JSONResponse(
        runtime.windows.render(await runtime.windows.get(principal.tenant_id, name))
    )


@router.put(
    "/{name}/",
    operation_id="update_window",
    response_model=WindowOut,
    openapi_extra={"requestBody": json_request_body(WindowUpdate)},
    responses={**_BODY, **AUTH_RESPONSES, 404: error_doc("No such window")},
)
async def update_window(
    name: str, request: Request, runtime: RuntimeDep, principal: WriteW
) -> JSONResponse:
    body = runtime.windows.parse(WindowUpdate, await read_json_object(request))
    row = await runtime.windows.update(principal.tenant_id, name, body)
    return JSONResponse(runtime.windows.render(row))


@router.delete(
    "/{name}/",
    operation_id="delete_window",
    status_code=204,
    response_class=Response,
    responses={
        **AUTH_RESPONSES,
        404: error_doc("No such window"),
        409: error_doc("Devices or unfinished operations use it"),
    },
)
async def delete_window(name: str, runtime: RuntimeDep, principal: WriteW) -> Response:
    await runtime.windows.delete(principal.tenant_id, name)
    return Response(status_code=204)
