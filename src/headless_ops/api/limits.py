"""Pure-ASGI guards run before any route: body size (413) and NUL in the URL (400)."""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headless_ops.errors import PayloadTooLarge

__all__ = ["BodyLimitMiddleware", "NulInUrlMiddleware"]


#: Room for a multipart body's envelope (boundaries, part headers, small text fields) above
#: the limit of its content: a firmware image of exactly the limit must pass as multipart
#: too. The route itself then holds the file part to the exact limit.
MULTIPART_SLACK = 64 * 1024


class BodyLimitMiddleware:
    """Refuse bodies over ``max_bytes``: by Content-Length at once, else while streaming.

    On an upload route (``overrides``), a ``multipart/form-data`` body may be
    :data:`MULTIPART_SLACK` bytes larger (its envelope).
    """

    def __init__(
        self, app: ASGIApp, max_bytes: int, overrides: tuple[tuple[str, int], ...] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        #: (path prefix, limit) for uploads that are meant to be large (firmware images).
        self.overrides = overrides

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        path = scope.get("path", "")
        overridden = False
        for prefix, override in self.overrides:
            if path.startswith(prefix):
                limit, overridden = override, True
                break
        declared = -1
        multipart = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
            elif name == b"content-type":
                multipart = value[:19].lower() == b"multipart/form-data"
        if multipart and overridden:
            # Once, whatever the number of Content-Type headers; only where uploads go.
            limit += MULTIPART_SLACK
        if declared > limit:
            await self._refuse(send, limit)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise PayloadTooLarge(f"the request body is larger than {limit} bytes")
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, send: Send, limit: int) -> None:
        body = json.dumps(
            {
                "detail": f"the request body is larger than {limit} bytes",
                "errors": [{"field": "", "message": f"at most {limit} bytes"}],
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class NulInUrlMiddleware:
    """Refuse a path or query string holding U+0000 (``%00``) with a 400.

    No id, name or filter value can contain it (PostgreSQL cannot store it, and would fail
    the lookup with an error rather than find nothing), so it is refused at the door.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (
            "\x00" in scope["path"] or b"%00" in scope.get("query_string", b"")
        ):
            body = json.dumps(
                {
                    "detail": "the URL may not contain the NUL character (%00)",
                    "errors": [{"field": "", "message": "contains %00"}],
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 400,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)
