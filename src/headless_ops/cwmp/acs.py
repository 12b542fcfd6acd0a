"""The ACS's HTTP listener: CWMP sessions, firmware downloads and configuration uploads.

Its own uvicorn server (default port 7547), beside the API's, in the same process or alone
(``headless-ops acs``). HTTP/1.1 keep-alive for a session's exchanges, chunked bodies,
``Expect: 100-continue`` and gzip/deflate request bodies are accepted; HTTPS when given a
certificate and key.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import zlib
from typing import TYPE_CHECKING, Any

import structlog
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from headless_ops.config import Settings
from headless_ops.cwmp.engine import AcsEngine

if TYPE_CHECKING:
    from headless_ops.api.runtime import Runtime

__all__ = ["AcsServer", "create_acs_app", "make_engine", "refresh_stale", "run_acs"]

log = structlog.get_logger(__name__)

_UPLOAD_MAX_BYTES = 64 * 1024 * 1024


class _TooLarge(Exception):
    pass


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _TooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge
        chunks.append(chunk)
    data = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "").lower()
    if encoding in ("gzip", "deflate"):
        wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
        decompressor = zlib.decompressobj(wbits)
        data = decompressor.decompress(data, limit + 1)
        if len(data) > limit or decompressor.unconsumed_tail:
            raise _TooLarge
    return data


def create_acs_app(engine: AcsEngine) -> Starlette:
    """The ACS's ASGI application."""
    settings = engine.settings
    limit = settings.cwmp_max_envelope_bytes

    async def cwmp(request: Request) -> Response:
        if request.method != "POST":
            return Response("only POST", status_code=405, headers={"Allow": "POST"})
        try:
            body = await _body(request, limit)
        except _TooLarge:
            return Response("envelope too large", status_code=413, headers={"Connection": "close"})
        except zlib.error:
            return Response("bad content encoding", status_code=400)
        client = request.scope.get("client") or ("?", 0)
        reply = await engine.handle(
            body,
            content_type=request.headers.get("content-type"),
            authorization=request.headers.get("authorization"),
            cookie=_cookie(request.headers.get("cookie", "")),
            conn_key=f"{client[0]}:{client[1]}",
        )
        return Response(reply.body, status_code=reply.status, headers=reply.headers)

    async def firmware(request: Request) -> Response:
        job = await engine.transfer_job(
            request.path_params["token"], request.headers.get("authorization"), request.method
        )
        if job is None:
            return Response("no such transfer", status_code=404)
        if job is False:
            return _challenge(engine)
        image_id = (job.progress or {}).get("image_id")
        image = await engine.resources.firmware.get(job.tenant_id, str(image_id))
        return FileResponse(
            image.path, media_type="application/octet-stream", filename=image.filename
        )

    async def upload(request: Request) -> Response:
        job = await engine.transfer_job(
            request.path_params["token"], request.headers.get("authorization"), request.method
        )
        if job is None:
            return Response("no such transfer", status_code=404)
        if job is False:
            return _challenge(engine)
        try:
            data = await _body(request, _UPLOAD_MAX_BYTES)
        except _TooLarge:
            return Response("upload too large", status_code=413)
        await engine.upload_received(job, data)
        return Response(status_code=204)

    routes = [
        Route(settings.cwmp_path, cwmp, methods=["GET", "POST", "PUT", "DELETE", "HEAD"]),
        Route("/firmware/{token}/{filename}", firmware, methods=["GET", "HEAD"]),
        Route("/upload/{token}/{name}", upload, methods=["PUT", "POST"]),
    ]
    return Starlette(routes=routes)


def _challenge(engine: AcsEngine) -> Response:
    return Response(
        "authentication required",
        status_code=401,
        headers={"WWW-Authenticate": engine.verifier.challenge("digest")},
    )


def _cookie(header: str) -> str | None:
    """The session cookie, parsed leniently (``;`` or ``,`` separated, quotes stripped)."""
    for part in header.replace(",", ";").split(";"):
        name, _, value = part.strip().partition("=")
        if name.strip() == "session":
            return value.strip().strip('"') or None
    return None


class AcsServer:
    """The ACS listener running in this process's event loop."""

    def __init__(self, engine: AcsEngine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[Any] | None = None
        self.port = settings.cwmp_port

    async def start(self) -> None:
        """Listen; returns once the socket is bound (``port`` is then the real one)."""
        s = self.settings
        config = uvicorn.Config(
            create_acs_app(self.engine),
            host=s.cwmp_host,
            port=s.cwmp_port,
            ssl_certfile=str(s.cwmp_tls_cert) if s.cwmp_tls_cert else None,
            ssl_keyfile=str(s.cwmp_tls_key) if s.cwmp_tls_key else None,
            timeout_keep_alive=int(max(5, s.cwmp_session_timeout_s)),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
        )
        # The socket is bound here, not by uvicorn: a port in use is then an OSError for the
        # caller, where uvicorn would end the whole process.
        family = socket.AF_INET6 if ":" in s.cwmp_host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((s.cwmp_host, s.cwmp_port))
        except OSError:
            sock.close()
            raise
        sock.set_inheritable(True)
        self.port = sock.getsockname()[1]
        if self.settings.cwmp_port == 0:
            self.settings.cwmp_port = self.port
        self.server = uvicorn.Server(config)
        self._task = asyncio.get_running_loop().create_task(self.server.serve(sockets=[sock]))
        self.engine.start()
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("the ACS listener did not start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop listening and end the sessions."""
        await self.engine.close()
        if self.server is not None:
            self.server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def make_engine(runtime: Runtime) -> AcsEngine:
    """The ACS engine of ``runtime``'s process, lent to its cwmp helper (so that work for a
    CPE in session here goes straight to the session)."""
    from headless_ops.cwmp.helper import CwmpHelper

    engine = AcsEngine(
        runtime.settings, runtime.resources, wake_scheduler=runtime.operations.notify_listeners
    )
    helper = runtime.registry.get("cwmp")
    if isinstance(helper, CwmpHelper):
        helper.engine = engine
    return engine


async def run_acs(runtime: Runtime, stop: asyncio.Event) -> None:
    """The embedded ACS (``serve``): listens until the server stops."""
    if not runtime.settings.cwmp_enabled:
        return
    engine = make_engine(runtime)
    server = AcsServer(engine, runtime.settings)
    try:
        await server.start()
    except OSError as exc:
        log.error(
            "the ACS could not listen: TR-069 CPEs cannot connect",
            host=runtime.settings.cwmp_host,
            port=runtime.settings.cwmp_port,
            error=str(exc),
        )
        await engine.close()  # it listens to device changes: let go of it
        return
    log.info("ACS listening", url=runtime.settings.cwmp_base_url + runtime.settings.cwmp_path)
    refresher = asyncio.get_running_loop().create_task(_status_refresh_loop(runtime, stop))
    try:
        await stop.wait()
    finally:
        refresher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await refresher
        await server.stop()


async def refresh_stale(runtime: Runtime, limit: int = 200) -> int:
    """One round of the periodic status refresh: CPEs silent for longer than
    ``cwmp_status_refresh_s`` get a connection request; their status is what follows."""
    from datetime import timedelta

    from headless_ops.services.status import refresh_devices
    from headless_ops.store.devices import stale_devices
    from headless_ops.timeutil import utcnow

    s = runtime.settings
    before = utcnow() - timedelta(seconds=s.cwmp_status_refresh_s)
    async with runtime.db.read() as conn:
        records = await stale_devices(conn, "cwmp", before, limit)
    if records:
        await refresh_devices(
            runtime.db,
            runtime.registry,
            runtime.box,
            records,
            timeout=s.status_refresh_timeout_s,
            concurrency=s.status_refresh_concurrency,
        )
    return len(records)


async def _status_refresh_loop(runtime: Runtime, stop: asyncio.Event) -> None:
    interval = runtime.settings.cwmp_status_refresh_s
    if interval <= 0:
        return
    pause = max(5.0, min(300.0, interval / 10))
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), pause)
        if stop.is_set():
            return
        try:
            count = await refresh_stale(runtime)
            if count:
                log.info("status of silent CPEs refreshed", count=count)
        except Exception:
            log.exception("periodic status refresh failed")
