"""``/config_template/``: configuration templates for ``configuration_sync``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictStr, ValidationError

from headless_ops.api.body import read_json_object
from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, Responses, error_doc, json_request_body
from headless_ops.api.pagination import page_links
from headless_ops.artifacts.templates import (
    NewTemplate,
    RenderError,
    TemplateUpdate,
    device_facts,
    render_context,
)
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.domain.operations import field_errors
from headless_ops.errors import FieldError, InvalidInput
from headless_ops.services.devices import device_view

__all__ = ["router"]

router = APIRouter(prefix="/config_template", tags=["configuration templates"])

ReadT = Annotated[Principal, Depends(require(Scope.DEVICES_READ))]
WriteT = Annotated[Principal, Depends(require(Scope.DEVICES_WRITE))]


class TemplateOut(BaseModel):
    """A configuration template."""

    name: str
    format: str
    content: str | None
    parameters: dict[str, Any] | None
    description: str | None
    created_at: str
    updated_at: str


class TemplateList(BaseModel):
    """A page of templates."""

    count: int
    next: str | None
    previous: str | None
    results: list[TemplateOut]


class RenderRequest(BaseModel):
    """``{"device_id": "dev_1", "variables": {"ntp": "10.0.0.1"}}``: preview a rendering."""

    model_config = ConfigDict(extra="forbid", strict=True)

    device_id: Annotated[StrictStr, Field(min_length=1, max_length=80)]
    variables: dict[str, Any] = Field(default_factory=dict)


class RenderOut(BaseModel):
    """What ``configuration_sync`` would push to that device."""

    format: str
    content: str | None
    parameters: list[dict[str, Any]] | None


_BODY: Responses = {
    400: error_doc("Invalid template (field errors name the Jinja2 line) or malformed JSON"),
    413: error_doc("Request body too large"),
    415: error_doc("Unsupported Content-Type"),
}


@router.get(
    "/",
    operation_id="list_templates",
    response_model=TemplateList,
    responses={400: error_doc("Invalid query parameter"), **AUTH_RESPONSES},
)
async def list_templates(
    request: Request,
    runtime: RuntimeDep,
    principal: ReadT,
    limit: Annotated[int, Query(ge=1, le=1000)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
) -> JSONResponse:
    count, rows = await runtime.templates.list(principal.tenant_id, limit, offset)
    nxt, prev = page_links(request, count, limit, offset)
    return JSONResponse(
        {
            "count": count,
            "next": nxt,
            "previous": prev,
            "results": [runtime.templates.render(r) for r in rows],
        }
    )


@router.post(
    "/",
    operation_id="create_template",
    status_code=201,
    response_model=TemplateOut,
    openapi_extra={"requestBody": json_request_body(NewTemplate)},
    responses={
        201: {"description": "Created", "headers": {"Location": {"schema": {"type": "string"}}}},
        **_BODY,
        **AUTH_RESPONSES,
        409: error_doc("The name is taken"),
    },
)
async def create_template(request: Request, runtime: RuntimeDep, principal: WriteT) -> JSONResponse:
    body = runtime.templates.parse(NewTemplate, await read_json_object(request))
    row = await runtime.templates.create(principal.tenant_id, body)
    location = str(request.url_for("get_template", name=row.name))
    return JSONResponse(
        runtime.templates.render(row), status_code=201, headers={"Location": location}
    )


_NOT_FOUND: Responses = {404: error_doc("No such template"), **AUTH_RESPONSES}


@router.get(
    "/{name}/",
    operation_id="get_template",
    name="get_template",
    response_model=TemplateOut,
    responses=_NOT_FOUND,
)
async def get_template(name: str, runtime: RuntimeDep, principal: ReadT) -> JSONResponse:
    return JSONResponse(
        runtime.templates.render(await runtime.templates.get_row(principal.tenant_id, name))
    )


@router.put(
    "/{name}/",
    operation_id="update_template",
    response_model=TemplateOut,
    openapi_extra={"requestBody": json_request_body(TemplateUpdate)},
    responses={**_BODY, **_NOT_FOUND},
)
async def update_template(
    name: str, request: Request, runtime: RuntimeDep, principal: WriteT
) -> JSONResponse:
    body = runtime.templates.parse(TemplateUpdate, await read_json_object(request))
    row = await runtime.templates.update(principal.tenant_id, name, body)
    return JSONResponse(runtime.templates.render(row))


@router.delete(
    "/{name}/",
    operation_id="delete_template",
    status_code=204,
    response_class=Response,
    responses=_NOT_FOUND,
)
async def delete_template(name: str, runtime: RuntimeDep, principal: WriteT) -> Response:
    await runtime.templates.delete(principal.tenant_id, name)
    return Response(status_code=204)


@router.post(
    "/{name}/render/",
    operation_id="render_template",
    summary="Preview the template rendered for one device",
    response_model=RenderOut,
    openapi_extra={"requestBody": json_request_body(RenderRequest)},
    responses={**_BODY, 404: error_doc("No such template or device"), **AUTH_RESPONSES},
)
async def render_template(
    name: str, request: Request, runtime: RuntimeDep, principal: ReadT
) -> JSONResponse:
    payload = await read_json_object(request)
    try:
        body = RenderRequest.model_validate(payload)
    except ValidationError as exc:
        raise InvalidInput("invalid render request", field_errors(exc)) from None
    await runtime.templates.get_row(principal.tenant_id, name)  # 404 first
    template = await runtime.templates.get(principal.tenant_id, name)
    assert template is not None
    record = await runtime.devices.get(principal.tenant_id, body.device_id)
    context = render_context(device_facts(device_view(record, runtime.box)), {}, body.variables)
    try:
        if template.format == "text":
            return JSONResponse(
                {"format": "text", "content": template.render_text(context), "parameters": None}
            )
        return JSONResponse(
            {
                "format": "parameters",
                "content": None,
                "parameters": template.render_parameters(context),
            }
        )
    except RenderError as exc:
        raise InvalidInput("the template does not render", [FieldError("", str(exc))]) from None
