"""``/healthz`` (the process is alive) and ``/readyz`` (the database answers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from headless_ops.api.deps import RuntimeDep
from headless_ops.api.errors import ErrorBody

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/healthz", operation_id="healthz", summary="Liveness")
async def healthz() -> dict[str, str]:
    """Always ``{"status": "ok"}`` while the process serves."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    operation_id="readyz",
    summary="Readiness: the database is reachable",
    responses={503: {"model": ErrorBody, "description": "The database does not answer"}},
)
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    """``{"status": "ready", "database": "sqlite"}`` or a 503 naming the problem."""
    try:
        await runtime.db.ping()
    except Exception as exc:
        return JSONResponse(
            {"detail": f"database unreachable: {type(exc).__name__}", "errors": []},
            status_code=503,
        )
    return JSONResponse({"status": "ready", "database": runtime.db.dialect})
