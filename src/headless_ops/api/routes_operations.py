"""``/inventory_device_headless_operation/`` and its by-name twin, on one code path."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import JSONResponse

from headless_ops.api.body import read_operation_body
from headless_ops.api.deps import RuntimeDep, require
from headless_ops.api.docs import AUTH_RESPONSES, Responses, error_doc
from headless_ops.api.pagination import page_links
from headless_ops.api.schemas import OperationList, OperationOut, render_operation
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal
from headless_ops.domain.lifecycle import Status
from headless_ops.domain.operations import OPERATION_ALIASES, PARAMETER_MODELS, Priority
from headless_ops.errors import FieldError, InvalidInput
from headless_ops.services.operations import OperationView
from headless_ops.services.requests import parse_new_operation, parse_timestamp
from headless_ops.services.status import refresh_devices
from headless_ops.store import devices as device_store
from headless_ops.store.operations import OperationFilter

__all__ = ["by_id_router", "by_name_router", "operation_request_body"]


_Q400: Responses = {400: error_doc("Invalid query parameter")}

ReadOps = Annotated[Principal, Depends(require(Scope.OPERATIONS_READ))]
WriteOps = Annotated[Principal, Depends(require(Scope.OPERATIONS_WRITE))]

IDEMPOTENCY_KEY = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        min_length=1,
        max_length=255,
        pattern=r"^[\x21-\x7e]+$",
        description="A repeat with the same key and body returns the original operation "
        "and creates nothing; the same key with another body is a 422. Kept at least 24 h.",
    ),
]


def _timestamp(name: str, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return parse_timestamp(value)
    except ValueError as exc:
        raise InvalidInput(f"invalid {name}", [FieldError(name, str(exc))]) from None


def _operation_schemas(key: str, by_name: bool) -> list[dict[str, Any]]:
    """One schema per operation type: its names (canonical and aliases) and its parameters.

    ``operation_type`` tells the variants apart, so the document says exactly which
    ``parameters`` each type takes (the models in ``components``, as the server checks them).
    """
    timestamp = {"type": ["string", "null"], "format": "date-time"}
    common: dict[str, Any] = {
        key: {"type": "string", "minLength": 1, "maxLength": 128 if by_name else 80},
        "scheduled_at": {
            **timestamp,
            "description": "UTC ISO 8601 with a zone (Z or an offset); omitted or null means now.",
        },
        "priority": {
            "type": "string",
            "enum": [p.value for p in Priority],
            "default": Priority.NORMAL.value,
        },
        "max_attempts": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": 100,
            "description": "Omitted or null: the server's default.",
        },
        "expires_at": {
            **timestamp,
            "description": "Latest start time; after it the operation fails as expired. "
            "Must be later than scheduled_at.",
        },
        "maintenance_window": {
            "type": ["string", "null"],
            "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
            "description": "Omitted or null: the device's window.",
        },
    }
    variants = []
    for op_type, model in PARAMETER_MODELS.items():
        names = [op_type.value] + [a for a, t in OPERATION_ALIASES.items() if t is op_type]
        needs_parameters = bool(model.model_json_schema().get("required"))
        variants.append(
            {
                "title": f"{op_type.value} ({key})",
                "type": "object",
                "additionalProperties": False,
                "required": [key, "operation_type"] + (["parameters"] if needs_parameters else []),
                "properties": {
                    key: common[key],
                    "operation_type": {"type": "string", "enum": names},
                    "parameters": {"$ref": f"#/components/schemas/{model.__name__}"},
                    **{k: v for k, v in common.items() if k != key},
                },
            }
        )
    return variants


def operation_request_body(by_name: bool) -> dict[str, Any]:
    """The OpenAPI requestBody of the POST: three media types, one operation."""
    key = "device_name" if by_name else "device_id"
    example = {
        key: "dev_67892" if not by_name else "gw-0001",
        "operation_type": "backup_configuration",
        "scheduled_at": "2024-01-16T02:00:00Z",
        "parameters": {
            "backup_location": "s3://backups/devices/",
            "compression": True,
            "retention_days": 30,
        },
        "priority": "normal",
    }
    operation = {"oneOf": _operation_schemas(key, by_name)}
    as_string = {"type": "string", "description": "The operation as a JSON string."}
    envelope = {
        "type": "object",
        "additionalProperties": False,
        "required": ["data"],
        "properties": {"data": as_string},
    }
    # In a JSON body, `data` may also hold the operation object itself.
    json_envelope = {
        **envelope,
        "properties": {"data": {"oneOf": [as_string, operation]}},
    }
    return {
        "required": True,
        "description": 'The operation as a JSON object, as `{"data": "<JSON string>"}`, '
        "or as a form field `data` holding the JSON string. All three give identical results.",
        "content": {
            "application/json": {
                "schema": {"oneOf": [operation, json_envelope]},
                "example": example,
            },
            "application/x-www-form-urlencoded": {
                "schema": envelope,
                "example": {"data": json.dumps(example)},
            },
            "multipart/form-data": {
                "schema": envelope,
                "example": {"data": json.dumps(example)},
            },
        },
    }


def _build(by_name: bool) -> APIRouter:
    base = (
        "/inventory_device_name_headless_operation"
        if by_name
        else "/inventory_device_headless_operation"
    )
    tag = "operations (by device name)" if by_name else "operations"
    router = APIRouter(prefix=base, tags=[tag])
    suffix = "_by_name" if by_name else ""

    @router.get(
        "/",
        operation_id=f"list_operations{suffix}",
        summary="List headless operations",
        response_model=OperationList,
        responses={**_Q400, **AUTH_RESPONSES},
    )
    async def list_operations(
        request: Request,
        runtime: RuntimeDep,
        principal: ReadOps,
        id: Annotated[str | None, Query(max_length=64, description="Operation id")] = None,
        device_id: Annotated[str | None, Query(max_length=80)] = None,
        device_name: Annotated[str | None, Query(max_length=128)] = None,
        status: Status | None = None,
        operation_type: Annotated[str | None, Query(max_length=32)] = None,
        scheduled_after: Annotated[
            str | None, Query(description="Inclusive lower bound, ISO 8601 with a zone")
        ] = None,
        scheduled_before: Annotated[
            str | None, Query(description="Exclusive upper bound, ISO 8601 with a zone")
        ] = None,
        update_status: Annotated[
            bool, Query(description="Refresh the status of the page's devices first")
        ] = False,
        limit: Annotated[int, Query(ge=1, le=1000)] = 50,
        offset: Annotated[int, Query(ge=0, le=2**62)] = 0,
    ) -> JSONResponse:
        tenant = principal.tenant_id
        if operation_type is not None:
            from headless_ops.domain.operations import normalize_operation_type

            try:
                operation_type = normalize_operation_type(operation_type).value
            except InvalidInput:
                raise InvalidInput(
                    "invalid operation_type",
                    [FieldError("operation_type", f"{operation_type!r} is not an operation type")],
                ) from None
        device_id_filter = device_id
        matches_nothing = False
        if device_name is not None:
            resolved = await runtime.operations.resolve_device_name(tenant, device_name)
            # An unknown name matches nothing, as an unknown id does (no query needed: a
            # sentinel id would have to be a string no engine refuses and no device has).
            matches_nothing = resolved is None or device_id not in (None, resolved)
            device_id_filter = resolved
        flt = OperationFilter(
            id=id,
            device_id=device_id_filter,
            status=status.value if status else None,
            operation_type=operation_type,
            scheduled_after=_timestamp("scheduled_after", scheduled_after),
            scheduled_before=_timestamp("scheduled_before", scheduled_before),
        )
        page: list[OperationView] = []
        if matches_nothing:
            count = 0
        else:
            count, page = await runtime.operations.list(tenant, flt, limit, offset)
        if update_status and page:
            async with runtime.db.read() as conn:
                devices = await device_store.get_devices(
                    conn, tenant, {v.op.device_id for v in page}
                )
            await refresh_devices(
                runtime.db,
                runtime.registry,
                runtime.box,
                devices.values(),
                timeout=runtime.settings.status_refresh_timeout_s,
                concurrency=runtime.settings.status_refresh_concurrency,
            )
            # Reconcile in-flight operations: a running one whose worker stopped renewing its
            # lease is rescued now rather than at the next reaper pass, then the page is
            # read again so it shows the state after the refresh.
            if any(v.op.status == "running" for v in page):
                await runtime.operations.rescue_expired_leases()
            count, page = await runtime.operations.list(tenant, flt, limit, offset)
        nxt, prev = page_links(request, count, limit, offset)
        return JSONResponse(
            {
                "count": count,
                "next": nxt,
                "previous": prev,
                "results": [render_operation(v) for v in page],
            }
        )

    @router.post(
        "/",
        operation_id=f"create_operation{suffix}",
        summary="Schedule a headless operation",
        status_code=201,
        response_model=OperationOut,
        openapi_extra={"requestBody": operation_request_body(by_name)},
        responses={
            201: {
                "description": "Operation scheduled (or the original one, when an "
                "Idempotency-Key repeats)",
                "headers": {
                    "Location": {
                        "required": True,
                        "description": "URL of the operation",
                        "schema": {"type": "string"},
                    },
                    "Idempotent-Replayed": {
                        "description": "`true` when this is the original operation of a "
                        "repeated Idempotency-Key",
                        "schema": {"type": "string", "enum": ["true"]},
                    },
                },
            },
            400: error_doc("Invalid parameters or malformed JSON"),
            **AUTH_RESPONSES,
            404: error_doc("The device does not exist"),
            413: error_doc("Request body too large"),
            415: error_doc("Unsupported Content-Type"),
            422: error_doc("Idempotency-Key reused with a different body"),
        },
    )
    async def create_operation(
        request: Request,
        runtime: RuntimeDep,
        principal: WriteOps,
        idempotency_key: IDEMPOTENCY_KEY = None,
    ) -> JSONResponse:
        payload = await read_operation_body(request)
        new = parse_new_operation(payload, by_name=by_name)
        result = await runtime.operations.create(
            principal.tenant_id, new, idempotency_key=idempotency_key
        )
        headers = {
            "Location": str(request.url_for(f"get_operation{suffix}", op_id=result.view.op.id))
        }
        if result.replayed:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(render_operation(result.view), status_code=201, headers=headers)

    @router.get(
        "/{op_id}/",
        operation_id=f"get_operation{suffix}",
        name=f"get_operation{suffix}",
        summary="Read one operation",
        response_model=OperationOut,
        responses={**AUTH_RESPONSES, 404: error_doc("No such operation")},
    )
    async def get_operation(
        op_id: Annotated[str, Depends(_op_id)], runtime: RuntimeDep, principal: ReadOps
    ) -> JSONResponse:
        view = await runtime.operations.get(principal.tenant_id, op_id, history=True)
        return JSONResponse(render_operation(view))

    @router.post(
        "/{op_id}/cancel/",
        operation_id=f"cancel_operation{suffix}",
        summary="Cancel an operation",
        response_model=OperationOut,
        responses={
            **AUTH_RESPONSES,
            404: error_doc("No such operation"),
            409: error_doc("The operation has already finished"),
        },
    )
    async def cancel_operation(
        op_id: Annotated[str, Depends(_op_id)], runtime: RuntimeDep, principal: WriteOps
    ) -> JSONResponse:
        view = await runtime.operations.cancel(principal.tenant_id, op_id)
        return JSONResponse(render_operation(view))

    return router


def _op_id(op_id: str) -> str:
    # Any string is a possible id; overlong ones simply do not exist.
    return op_id[:200]


by_id_router = _build(by_name=False)
by_name_router = _build(by_name=True)
