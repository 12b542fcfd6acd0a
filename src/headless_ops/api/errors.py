"""One JSON error shape for every 4xx and 5xx: ``{"detail": str, "errors": [{"field", "message"}]}``."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from headless_ops.errors import FieldError, HeadlessOpsError, Unauthorized

__all__ = ["ErrorBody", "ErrorItem", "error_response", "install_error_handlers"]

log = structlog.get_logger(__name__)


class ErrorItem(BaseModel):
    """One problem: the field (dotted path; empty for the whole request) and what is wrong."""

    field: str
    message: str


class ErrorBody(BaseModel):
    """Every error response: ``{"detail": "invalid operation", "errors": [{"field": "priority", "message": "…"}]}``"""

    detail: str
    errors: list[ErrorItem]


def error_response(
    status: int,
    detail: str,
    errors: list[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """Render the one error shape."""
    body: dict[str, Any] = {
        "detail": detail,
        "errors": [{"field": e.field, "message": e.message} for e in errors or []],
    }
    return JSONResponse(body, status_code=status, headers=headers)


def _query_errors(exc: RequestValidationError) -> list[FieldError]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        if loc and loc[0] in ("query", "path", "header", "body"):
            loc = loc[1:]
        msg = str(err.get("msg", "invalid"))
        out.append(FieldError(".".join(loc), msg.removeprefix("Value error, ")))
    return out


def install_error_handlers(app: FastAPI) -> None:
    """400 (never 422) for validation; our exceptions with their status; 500 without detail."""

    @app.exception_handler(HeadlessOpsError)
    async def _ours(_request: Request, exc: HeadlessOpsError) -> JSONResponse:
        headers = None
        if isinstance(exc, Unauthorized):
            # RFC 6750: no error code when no credentials were presented at all.
            challenge = 'Bearer realm="headless-ops"'
            if _request.headers.get("authorization"):
                challenge += ', error="invalid_token"'
            headers = {"WWW-Authenticate": challenge}
        return error_response(exc.status_code, exc.message, exc.errors, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(400, "invalid request", _query_errors(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else "error"
        return error_response(exc.status_code, detail, [], dict(exc.headers or {}))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, ClientDisconnect):
            # The client went away while sending its body: nobody reads this answer, and it
            # is no server error.
            log.info("client disconnected mid-request", path=request.url.path)
            return error_response(400, "the client disconnected before the body was sent", [])
        log.exception("unhandled error", path=request.url.path, error=type(exc).__name__)
        return error_response(500, "internal error", [])
