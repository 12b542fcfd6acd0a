"""``/firmware/``: the firmware repository (upload, list, read, download, delete)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel
from starlette.datastructures import UploadFile

from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, Responses, error_doc
from headless_ops.api.pagination import page_links
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.errors import FieldError, InvalidInput, UnsupportedMediaType

__all__ = ["router"]

router = APIRouter(prefix="/firmware", tags=["firmware"])

ReadF = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]
WriteF = Annotated[Principal, Depends(require(Scope.DEVICES_WRITE))]

_CHUNK = 1024 * 1024


class FirmwareOut(BaseModel):
    """A stored firmware image."""

    id: str
    version: str
    product_class: str | None
    filename: str
    size: int
    sha256: str
    description: str | None
    created_at: str


class FirmwareList(BaseModel):
    """A page of firmware images."""

    count: int
    next: str | None
    previous: str | None
    results: list[FirmwareOut]


_FIELDS = {
    "version": {"type": "string", "description": "The version the image installs"},
    "product_class": {
        "type": "string",
        "description": "Devices it is for (TR-069 ProductClass or an SSH device's "
        "product_class); absent: any device",
    },
    "sha256": {"type": "string", "description": "Expected SHA-256 (hex); verified on upload"},
    "filename": {"type": "string"},
    "description": {"type": "string"},
}

_UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["version", "file"],
                "properties": {**_FIELDS, "file": {"type": "string", "format": "binary"}},
            }
        },
        "application/octet-stream": {
            "schema": {"type": "string", "format": "binary"},
        },
    },
}


async def _stream(request: Request) -> AsyncIterator[bytes]:
    async for chunk in request.stream():
        if chunk:
            yield chunk


async def _file_chunks(upload: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await upload.read(_CHUNK):
        yield chunk


def _safe_filename(name: str | None) -> str | None:
    """A client's file name made fit for a device path: the last path part, other characters
    than letters, digits and ``. _ + -`` replaced (an explicit ``filename`` field is strict)."""
    if not name:
        return None
    base = re.sub(r"[^A-Za-z0-9._+-]", "_", name.replace("\\", "/").rsplit("/", 1)[-1])
    base = base.lstrip("._-+")[:255]
    return base or None


def _text_field(value: Any, name: str, required: bool = False) -> str | None:
    if value is None or value == "":
        if required:
            raise InvalidInput(f"missing {name}", [FieldError(name, "is required")])
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"invalid {name}", [FieldError(name, "must be a text field")])
    return value


@router.post(
    "/",
    operation_id="upload_firmware",
    summary="Upload a firmware image",
    description=(
        "Either `multipart/form-data` with the fields and a `file` part, or the image as an "
        "`application/octet-stream` body with the fields as query parameters "
        "(`?version=2.1.3&product_class=BM632w&sha256=…`). The SHA-256 is computed on the "
        "way in and checked against `sha256` when given."
    ),
    status_code=201,
    response_model=FirmwareOut,
    openapi_extra={"requestBody": _UPLOAD_BODY},
    responses={
        201: {"description": "Stored", "headers": {"Location": {"schema": {"type": "string"}}}},
        400: error_doc("Missing or invalid field, empty image, checksum mismatch"),
        409: error_doc("This version already exists for this product class"),
        413: error_doc("The image is larger than the configured limit"),
        415: error_doc("Unsupported Content-Type"),
        **AUTH_RESPONSES,
    },
)
async def upload_firmware(request: Request, runtime: RuntimeDep, principal: WriteF) -> JSONResponse:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media == "multipart/form-data":
        async with request.form(max_files=1, max_fields=16) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise InvalidInput("missing file", [FieldError("file", "a file part is required")])
            row = await runtime.firmware.add(
                principal.tenant_id,
                version=_text_field(form.get("version"), "version", required=True) or "",
                product_class=_text_field(form.get("product_class"), "product_class"),
                filename=_text_field(form.get("filename"), "filename")
                or _safe_filename(upload.filename),
                sha256=_text_field(form.get("sha256"), "sha256"),
                description=_text_field(form.get("description"), "description"),
                chunks=_file_chunks(upload),
            )
    elif media == "application/octet-stream":
        q = request.query_params
        row = await runtime.firmware.add(
            principal.tenant_id,
            version=_text_field(q.get("version"), "version", required=True) or "",
            product_class=_text_field(q.get("product_class"), "product_class"),
            filename=_text_field(q.get("filename"), "filename"),
            sha256=_text_field(q.get("sha256"), "sha256"),
            description=_text_field(q.get("description"), "description"),
            chunks=_stream(request),
        )
    else:
        raise UnsupportedMediaType(
            f"Content-Type {media or '(none)'} is not supported: send multipart/form-data "
            "or application/octet-stream"
        )
    location = str(request.url_for("get_firmware", image_id=row.id))
    return JSONResponse(
        runtime.firmware.render(row), status_code=201, headers={"Location": location}
    )


@router.get(
    "/",
    operation_id="list_firmware",
    summary="List firmware images",
    response_model=FirmwareList,
    responses={400: error_doc("Invalid query parameter"), **AUTH_RESPONSES},
)
async def list_firmware(
    request: Request,
    runtime: RuntimeDep,
    principal: ReadF,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    version: Annotated[str | None, Query(max_length=128)] = None,
    product_class: Annotated[str | None, Query(max_length=64)] = None,
) -> JSONResponse:
    count, rows = await runtime.firmware.list(
        principal.tenant_id, limit, offset, version, product_class
    )
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [runtime.firmware.render(r) for r in rows],
        }
    )


_NOT_FOUND: Responses = {404: error_doc("No such image"), **AUTH_RESPONSES}


@router.get(
    "/{image_id}/",
    operation_id="get_firmware",
    name="get_firmware",
    response_model=FirmwareOut,
    responses=_NOT_FOUND,
)
async def get_firmware(image_id: str, runtime: RuntimeDep, principal: ReadF) -> JSONResponse:
    row = await runtime.firmware.get_row(principal.tenant_id, image_id)
    return JSONResponse(runtime.firmware.render(row))


@router.get(
    "/{image_id}/content",
    operation_id="download_firmware",
    summary="Download the image's bytes",
    response_class=FileResponse,
    responses={
        200: {
            "content": {
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}
            }
        },
        **_NOT_FOUND,
    },
)
async def download_firmware(image_id: str, runtime: RuntimeDep, principal: ReadF) -> FileResponse:
    image = await runtime.firmware.get(principal.tenant_id, image_id)
    return FileResponse(
        image.path,
        media_type="application/octet-stream",
        filename=image.filename,
        headers={"X-Checksum-SHA256": image.sha256},
    )


@router.delete(
    "/{image_id}/",
    operation_id="delete_firmware",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_firmware(image_id: str, runtime: RuntimeDep, principal: WriteF) -> Response:
    await runtime.firmware.delete(principal.tenant_id, image_id)
    return Response(status_code=204)
