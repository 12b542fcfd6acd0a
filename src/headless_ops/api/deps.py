"""Route dependencies: the runtime and the authenticated principal with a required scope."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPBearer

from headless_ops.api.runtime import Runtime
from headless_ops.auth.scopes import Scope
from headless_ops.auth.tokens import Principal, authenticate
from headless_ops.errors import Forbidden

__all__ = ["RuntimeDep", "get_runtime", "require"]

# Documents the Bearer scheme in OpenAPI; the checking is ours (401 vs 403 as the contract says).
_bearer_doc = HTTPBearer(auto_error=False, description="`Authorization: Bearer tok_….<secret>`")


async def get_runtime(request: Request) -> Runtime:
    """The server's runtime (``async``: FastAPI would run a plain ``def`` in a thread)."""
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def require(scope: Scope) -> Callable[..., Coroutine[Any, Any, Principal]]:
    """A dependency: the caller's principal, 401 without a valid token, 403 without ``scope``."""

    async def dependency(
        request: Request,
        runtime: RuntimeDep,
        _doc: Annotated[object, Depends(_bearer_doc)],
    ) -> Principal:
        principal = await authenticate(
            runtime.db, runtime.hasher, request.headers.get("authorization")
        )
        if not principal.has(scope):
            raise Forbidden(f"this token lacks the scope {scope.value}")
        return principal

    return dependency
