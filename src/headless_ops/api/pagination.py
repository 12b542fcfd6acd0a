"""``next``/``previous`` links for limit/offset pages."""

from __future__ import annotations

from starlette.requests import Request

__all__ = ["page_links"]


def page_links(
    request: Request, count: int, limit: int, offset: int
) -> tuple[str | None, str | None]:
    """Absolute URLs of the next and previous pages, or ``None`` at either end."""
    nxt = prev = None
    if offset + limit < count:
        nxt = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    if offset > 0:
        prev = str(request.url.include_query_params(limit=limit, offset=max(0, offset - limit)))
    return nxt, prev
