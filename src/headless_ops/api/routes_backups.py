"""``/inventory_device/{id}/backups/``: a device's configuration backups, listed and
downloaded."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, error_doc
from headless_ops.api.pagination import page_links
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.helpers.base import HelperError

__all__ = ["router"]

router = APIRouter(prefix="/inventory_device", tags=["inventory"])

ReadB = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]


class BackupOut(BaseModel):
    """One configuration backup."""

    id: str
    device_id: str
    operation_id: str | None
    uri: str
    size: int
    sha256: str
    compressed: bool
    method: str
    created_at: str


class BackupList(BaseModel):
    """A page of a device's backups, newest first."""

    count: int
    next: str | None
    previous: str | None
    results: list[BackupOut]


@router.get(
    "/{device_id}/backups/",
    operation_id="list_backups",
    summary="List a device's configuration backups",
    response_model=BackupList,
    responses={
        400: error_doc("Invalid query parameter"),
        404: error_doc("No such device"),
        **AUTH_RESPONSES,
    },
)
async def list_backups(
    device_id: str,
    request: Request,
    runtime: RuntimeDep,
    principal: ReadB,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> JSONResponse:
    await runtime.devices.get(principal.tenant_id, device_id)  # 404 for an unknown device
    count, rows = await runtime.backups.list(principal.tenant_id, device_id, limit, offset)
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [runtime.backups.render(r) for r in rows],
        }
    )


@router.get(
    "/{device_id}/backups/{backup_id}/",
    operation_id="get_backup",
    response_model=BackupOut,
    responses={404: error_doc("No such device or backup"), **AUTH_RESPONSES},
)
async def get_backup(
    device_id: str, backup_id: str, runtime: RuntimeDep, principal: ReadB
) -> JSONResponse:
    row = await runtime.backups.get(principal.tenant_id, device_id, backup_id)
    return JSONResponse(runtime.backups.render(row))


@router.get(
    "/{device_id}/backups/{backup_id}/content",
    operation_id="download_backup",
    summary="Download the configuration as taken (decompressed)",
    response_class=Response,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        404: error_doc("No such device or backup"),
        503: error_doc("The backup store could not be read, or the object fails its checksum"),
        **AUTH_RESPONSES,
    },
)
async def download_backup(
    device_id: str, backup_id: str, runtime: RuntimeDep, principal: ReadB
) -> Response:
    row = await runtime.backups.get(principal.tenant_id, device_id, backup_id)
    try:
        data = await runtime.backups.content(row)
    except HelperError as exc:
        return JSONResponse(
            {"detail": exc.message, "errors": [{"field": "", "message": exc.code}]},
            status_code=503,
        )
    return Response(
        data,
        media_type="application/octet-stream",
        headers={
            "Content-Disposition": f'attachment; filename="{device_id}-{backup_id}.cfg"',
            "X-Checksum-SHA256": row.sha256,
        },
    )
