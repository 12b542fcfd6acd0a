"""One simulated TR-069 CPE: a real CWMP client over HTTP, with its own connection-request
listener, a data model, and switches to inject faults.

Cheap at scale: an idle CPE is a listening socket, a small dict of changed values and at
most one ``call_later`` timer (periodic Inform). Tasks exist only while something runs: a
session, a connection-request exchange, a transfer or a simulated reboot.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import secrets
import ssl
import time
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.request import parse_http_list, parse_keqv_list

import httpx2

from headless_ops.cwmp.soap import (
    CWMP_1_0,
    AddObject,
    AddObjectResponse,
    CwmpFault,
    DeleteObject,
    DeleteObjectResponse,
    DeviceId,
    Download,
    DownloadResponse,
    Envelope,
    EventStruct,
    FactoryReset,
    FactoryResetResponse,
    GetParameterNames,
    GetParameterNamesResponse,
    GetParameterValues,
    GetParameterValuesResponse,
    GetRPCMethods,
    GetRPCMethodsResponse,
    Inform,
    InformResponse,
    Message,
    ParameterValue,
    Reboot,
    RebootResponse,
    ScheduleInform,
    ScheduleInformResponse,
    SetParameterValues,
    SetParameterValuesResponse,
    SoapError,
    TransferComplete,
    TransferCompleteResponse,
    UnknownMethod,
    Upload,
    UploadResponse,
    parse,
    serialize,
)
from headless_ops.simulator.datamodel import CpeFault, DataModel, fault_text

__all__ = [
    "CR_REALM",
    "CpeConfig",
    "CpeFaults",
    "SimulatedCpe",
    "config_file_text",
]

#: Digest realm of the connection-request listener.
CR_REALM = "headless-ops-sim"
#: RPCs a simulated CPE answers (its GetRPCMethodsResponse).
SUPPORTED_RPCS = [
    "GetRPCMethods",
    "SetParameterValues",
    "GetParameterValues",
    "GetParameterNames",
    "AddObject",
    "DeleteObject",
    "Reboot",
    "Download",
    "Upload",
    "FactoryReset",
    "ScheduleInform",
]

BOOTSTRAP = "0 BOOTSTRAP"
BOOT = "1 BOOT"
PERIODIC = "2 PERIODIC"
SCHEDULED = "3 SCHEDULED"
CONNECTION_REQUEST = "6 CONNECTION REQUEST"
TRANSFER_COMPLETE = "7 TRANSFER COMPLETE"

#: What the ACS may send after the CPE's empty POST (anything else ends the session).
_ACS_REQUESTS = (
    GetParameterValues,
    SetParameterValues,
    GetParameterNames,
    AddObject,
    DeleteObject,
    Reboot,
    FactoryReset,
    Download,
    Upload,
    ScheduleInform,
    GetRPCMethods,
    UnknownMethod,
)
_FIRMWARE = "1 Firmware Upgrade Image"
_CONFIG_DOWNLOAD = "3 Vendor Configuration File"
_MAX_CONFIG_BYTES = 4 * 1024 * 1024
_CR_HEAD_LIMIT = 8192
_CR_IDLE_S = 10.0
_CR_REQUESTS_PER_CONNECTION = 8
# Stateless Digest nonces: "<hex time>.<mac>", checked by recomputing the mac; one key per
# process is enough since a nonce only has to prove it came from this listener recently.
_NONCE_KEY = secrets.token_bytes(16)
_NONCE_TTL_S = 300
_id_counter = itertools.count(1)


@dataclass
class CpeFaults:
    """Fault injection; every field may be changed at any time, effective at once."""

    #: Sleep before every HTTP request the CPE sends (session POSTs, downloads, uploads).
    latency_s: float = 0.0
    #: ACS RPC name -> answer it with this CWMP fault code (e.g. {"Download": 9010}).
    fault_rpcs: dict[str, int] = field(default_factory=dict)
    #: ACS RPC name: close the TCP connection instead of answering. The RPC is still carried
    #: out on the model (the change lands, the answer is lost); follow-ups such as a reboot
    #: are dropped with the session.
    drop_on: str | None = None
    #: After a Download/Upload, never send TransferComplete (nor its events).
    no_transfer_complete: bool = False
    #: Report this fault code in TransferComplete instead of transferring anything.
    download_fault: int | None = None
    #: The connection-request listener answers 503.
    refuse_connection_requests: bool = False


@dataclass
class CpeConfig:
    """How one simulated CPE is set up (identity, ACS, listener, timings)."""

    acs_url: str
    serial_number: str
    #: "tr098", "tr181" or a CSV path.
    model: str = "tr098"
    #: Defaults for these four come from the model's DeviceInfo / DeviceID rows.
    oui: str | None = None
    product_class: str | None = None
    manufacturer: str | None = None
    #: Overrides the model's DeviceInfo.SoftwareVersion.
    software_version: str | None = None
    #: ACS credentials (Basic or Digest, whichever the ACS challenges with); None: no auth.
    acs_username: str | None = None
    acs_password: str | None = None
    cr_host: str = "127.0.0.1"
    cr_port: int = 0
    #: Connection-request credentials the CPE starts with (and returns to after a
    #: FactoryReset); the ACS may change them by SPV. An empty password: no auth required.
    cr_username: str | None = None
    cr_password: str | None = None
    #: Seconds between periodic Informs; None: none.
    periodic_inform_s: float | None = None
    cwmp_ns: str = CWMP_1_0
    #: Offline time of a simulated reboot.
    reboot_s: float = 0.5
    faults: CpeFaults = field(default_factory=CpeFaults)
    #: Delay of the one retry after a failed session; None: no retry.
    retry_s: float | None = 1.0
    #: Timeout of every HTTP request (connect, read, write).
    http_timeout_s: float = 30.0
    #: HTTPS certificate check: True (system CAs), False (none), or a CA bundle path.
    tls_verify: bool | str = True


class _SessionError(Exception):
    """A session that cannot go on (HTTP status, unexpected message, fault on Inform)."""


class _Dropped(Exception):
    """``drop_on`` fired: the connection is closed instead of answering."""


@dataclass
class _FollowUp:
    """What a session leaves to do after it ended: reboot, factory reset, transfers."""

    reboot_keys: list[str] = field(default_factory=list)
    factory_reset: bool = False
    transfers: list[Download | Upload] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.reboot_keys or self.factory_reset or self.transfers)


class _ChallengeAuth(httpx2.Auth):
    """Answers whichever challenge the server sends: Digest when offered, else Basic."""

    def __init__(self, username: str, password: str) -> None:
        self._digest = httpx2.DigestAuth(username, password)
        self._basic = httpx2.BasicAuth(username, password)
        self._scheme: str | None = None

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        """First request unauthenticated; after a 401, the scheme it offered from then on."""
        if self._scheme == "basic":
            yield from self._basic.auth_flow(request)
            return
        if self._scheme == "digest":
            yield from self._digest.auth_flow(request)
            return
        response = yield request
        if response.status_code != 401:
            return
        offered = {
            h.strip().split(" ", 1)[0].lower()
            for h in response.headers.get_list("www-authenticate")
        }
        if "digest" in offered:
            self._scheme = "digest"
            flow = self._digest.auth_flow(request)
            next(flow)  # its unauthenticated first attempt: the one just answered 401
            with contextlib.suppress(StopIteration):
                yield flow.send(response)
        elif "basic" in offered:
            self._scheme = "basic"
            yield from self._basic.auth_flow(request)


@functools.cache
def _tls_context(verify: bool | str) -> ssl.SSLContext:
    # Building a context loads the CA bundle (~20 ms): once per process, not per session.
    return httpx2.create_ssl_context(verify=verify, trust_env=False)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _md5(text: str) -> str:
    # HTTP Digest (RFC 2617) as TR-069 connection requests use it is defined over MD5.
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


def _new_nonce() -> str:
    stamp = f"{int(time.time()):x}"
    mac = hmac.new(_NONCE_KEY, stamp.encode(), hashlib.sha256).hexdigest()[:24]
    return f"{stamp}.{mac}"


def _nonce_ok(nonce: str) -> bool:
    stamp, _, mac = nonce.partition(".")
    expected = hmac.new(_NONCE_KEY, stamp.encode(), hashlib.sha256).hexdigest()[:24]
    if not hmac.compare_digest(mac, expected):
        return False
    try:
        return 0 <= time.time() - int(stamp, 16) <= _NONCE_TTL_S
    except ValueError:
        return False


def config_file_text(values: Iterable[ParameterValue]) -> str:
    """The configuration file an Upload sends: one ``name<TAB>type<TAB>value`` line each."""
    return "".join(f"{pv.name}\t{pv.type}\t{pv.value}\n" for pv in values)


def _http_response(status: int, reason: str, headers: dict[str, str], keep_alive: bool) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}", "Content-Length: 0"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _rpc_name(body: object) -> str:
    return body.name if isinstance(body, UnknownMethod) else type(body).__name__


class SimulatedCpe:
    """A simulated CPE. ``start()`` opens the listener and runs the bootstrap session."""

    def __init__(self, config: CpeConfig) -> None:
        self.config = config
        self.model: DataModel = DataModel.load(config.model)
        #: http://cr_host:port/<random path>, known once ``start()`` opened the listener.
        self.connection_request_url: str = ""
        #: Sessions that ended normally (the ACS's empty answer).
        self.sessions = 0
        #: Sessions that failed (see ``last_session_error``).
        self.failed_sessions = 0
        #: Simulated reboots done (Reboot, FactoryReset, firmware download).
        self.boots = 0
        #: Every ACS RPC received, in order (also those faulted or dropped).
        self.rpcs: list[str] = []
        #: Why the last session failed; None when it ended normally.
        self.last_session_error: str | None = None
        self._cr_path = secrets.token_hex(8)
        self._firmware = config.software_version
        self._server: asyncio.Server | None = None
        self._lock = asyncio.Lock()
        self._pending: dict[tuple[str, str], EventStruct] = {}
        self._transfer_results: list[TransferComplete] = []
        self._queued = False
        self._offline = False
        self._closing = False
        self._retry_count = 0
        self._boot_time = time.monotonic()
        self._periodic_s = config.periodic_inform_s
        self._periodic: asyncio.TimerHandle | None = None
        self._timers: set[asyncio.TimerHandle] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._cr_writers: set[asyncio.StreamWriter] = set()
        self._cr_tasks: set[asyncio.Task[Any]] = set()
        self._apply_identity()
        di = self.model.root + "DeviceInfo."
        dev = self.model.device_id
        self._device_id = DeviceId(
            manufacturer=self.model.value(di + "Manufacturer") or dev.get("Manufacturer", ""),
            oui=self.model.value(di + "ManufacturerOUI") or dev.get("OUI", ""),
            product_class=self.model.value(di + "ProductClass") or dev.get("ProductClass", ""),
            serial_number=config.serial_number,
        )

    # ---- public interface ----

    @property
    def device_id(self) -> DeviceId:
        """The DeviceId this CPE informs with."""
        return self._device_id

    @property
    def software_version(self) -> str:
        """DeviceInfo.SoftwareVersion as the model holds it now."""
        return self.model.value(self.model.root + "DeviceInfo.SoftwareVersion") or ""

    @property
    def rebooting(self) -> bool:
        """True while a simulated reboot keeps the CPE offline."""
        return self._offline

    async def start(self, *, bootstrap: bool = True) -> None:
        """Open the connection-request listener, then run the first session ("0 BOOTSTRAP" +
        "1 BOOT", or "1 BOOT" alone); returns once that session ended (see
        ``last_session_error``)."""
        self._server = await asyncio.start_server(
            self._handle_connection_request,
            self.config.cr_host,
            self.config.cr_port,
            limit=_CR_HEAD_LIMIT,
        )
        port = self._server.sockets[0].getsockname()[1]
        host = self.config.cr_host
        host = f"[{host}]" if ":" in host else host
        self.connection_request_url = f"http://{host}:{port}/{self._cr_path}"
        self._set(self._ms("ConnectionRequestURL"), self.connection_request_url)
        self._boot_time = time.monotonic()
        events = [EventStruct(BOOTSTRAP), EventStruct(BOOT)] if bootstrap else [EventStruct(BOOT)]
        await self._run(events)
        self._arm_periodic()

    async def inform(self, *events: str) -> None:
        """Run one session now with these event codes ("M <method> <key>" carries a command
        key); waits behind a running session. Failures land in ``last_session_error``."""
        structs = []
        for code in events:
            if code.startswith("M "):
                method, _, key = code[2:].partition(" ")
                structs.append(EventStruct(f"M {method}", key))
            else:
                structs.append(EventStruct(code))
        await self._run(structs)

    async def close(self) -> None:
        """Stop everything: timers, listener, open connections, running sessions."""
        self._closing = True
        if self._periodic is not None:
            self._periodic.cancel()
        for timer in self._timers:
            timer.cancel()
        self._timers.clear()
        if self._server is not None:
            self._server.close()
        # Connection-request exchanges end by themselves once their sockets are closed.
        for writer in list(self._cr_writers):
            writer.close()
        if self._cr_tasks:
            _, stuck = await asyncio.wait(set(self._cr_tasks), timeout=5)
            for task in stuck:
                task.cancel()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    # ---- model bookkeeping ----

    def _ms(self, leaf: str) -> str:
        return f"{self.model.root}ManagementServer.{leaf}"

    def _set(self, name: str, value: str) -> None:
        # Custom CSV models may lack some standard parameters: skip those.
        if self.model.value(name) is not None:
            self.model.set_value(name, value)

    def _apply_identity(self) -> None:
        """Write the config's identity and management settings into a freshly loaded model."""
        cfg = self.config
        di = self.model.root + "DeviceInfo."
        self._set(di + "SerialNumber", cfg.serial_number)
        for leaf, value in (
            ("ManufacturerOUI", cfg.oui),
            ("ProductClass", cfg.product_class),
            ("Manufacturer", cfg.manufacturer),
            ("SoftwareVersion", self._firmware),
        ):
            if value is not None:
                self._set(di + leaf, value)
        self._set(self._ms("URL"), cfg.acs_url)
        self._set(self._ms("Username"), cfg.acs_username or "")
        self._set(self._ms("Password"), cfg.acs_password or "")
        self._set(self._ms("ConnectionRequestUsername"), cfg.cr_username or "")
        self._set(self._ms("ConnectionRequestPassword"), cfg.cr_password or "")
        self._set(self._ms("ParameterKey"), "")
        if self.connection_request_url:
            self._set(self._ms("ConnectionRequestURL"), self.connection_request_url)
        self._set(self._ms("PeriodicInformEnable"), "true" if cfg.periodic_inform_s else "false")
        if cfg.periodic_inform_s:
            self._set(self._ms("PeriodicInformInterval"), str(max(1, round(cfg.periodic_inform_s))))
        self._periodic_s = cfg.periodic_inform_s

    def _refresh_uptime(self) -> None:
        self._set(
            self.model.root + "DeviceInfo.UpTime", str(int(time.monotonic() - self._boot_time))
        )

    def _inform_parameters(self) -> list[ParameterValue]:
        root = self.model.root
        self._refresh_uptime()
        names = [
            root + "DeviceSummary",
            root + "RootDataModelVersion",
            root + "DeviceInfo.HardwareVersion",
            root + "DeviceInfo.SoftwareVersion",
            root + "DeviceInfo.ProvisioningCode",
            root + "ManagementServer.ParameterKey",
            root + "ManagementServer.ConnectionRequestURL",
            root + "DeviceInfo.UpTime",
        ]
        return self.model.get([n for n in names if self.model.value(n) is not None])

    # ---- scheduling ----

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.last_session_error = f"internal error: {task.exception()!r}"

    def _later(self, delay: float, callback: Callable[[], None]) -> None:
        def fire() -> None:
            self._timers.discard(handle)
            if not self._closing:
                callback()

        handle = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(handle)

    def _arm_periodic(self) -> None:
        if self._periodic is not None:
            self._periodic.cancel()
            self._periodic = None
        if self._periodic_s and not self._closing:
            self._periodic = asyncio.get_running_loop().call_later(
                self._periodic_s, self._periodic_fire
            )

    def _periodic_fire(self) -> None:
        self._periodic = None
        if self._closing:
            return
        self._trigger([EventStruct(PERIODIC)])
        self._arm_periodic()

    def _trigger(self, events: list[EventStruct]) -> None:
        """Ask for a session with these events; coalesced with one already waiting."""
        for event in events:
            self._pending.setdefault((event.code, event.command_key), event)
        if not self._queued and not self._closing:
            self._queued = True
            self._spawn(self._run_queued())

    async def _run_queued(self) -> None:
        await self._lock.acquire()
        self._queued = False
        if not self._pending:
            # A session that ran meanwhile (a reboot's, say) already delivered the events.
            self._lock.release()
            return
        await self._run_locked([], is_retry=False)

    async def _run(self, events: list[EventStruct], *, is_retry: bool = False) -> None:
        await self._lock.acquire()
        await self._run_locked(events, is_retry=is_retry)

    async def _run_locked(self, events: list[EventStruct], *, is_retry: bool) -> None:
        """One session with the lock held. The lock is released at the end, or handed to the
        follow-up task (reboot, transfers) so that no session slips in before it is done."""
        handed_over = False
        try:
            follow = await self._session(events, is_retry=is_retry)
            if follow and not self._closing:
                if not follow.transfers:
                    self._offline = True  # rebooting from now: connection requests get 503
                self._spawn(self._follow_up(follow))
                handed_over = True
        finally:
            if not handed_over:
                self._lock.release()

    async def _follow_up(self, follow: _FollowUp | None) -> None:
        """Runs holding the lock it was handed: transfers, reboots, and the sessions that
        report them, until nothing is left to do."""
        try:
            while follow and not self._closing:
                events = await self._perform(follow)
                if not events:
                    break
                follow = await self._session(events, is_retry=False)
        finally:
            self._lock.release()

    # ---- the session ----

    async def _session(self, extra: list[EventStruct], *, is_retry: bool) -> _FollowUp | None:
        for event in extra:
            self._pending.setdefault((event.code, event.command_key), event)
        follow = _FollowUp()
        try:
            await self._exchange(follow)
        except Exception as exc:  # every failure ends the session the same way
            if isinstance(exc, _Dropped):
                reason = str(exc)
            elif isinstance(exc, (httpx2.HTTPError, SoapError, _SessionError, OSError)):
                reason = f"{type(exc).__name__}: {exc}"
            else:
                reason = f"internal error: {exc!r}"
            self.last_session_error = reason or type(exc).__name__
            self.failed_sessions += 1
            self._retry_count += 1
            if not is_retry and self.config.retry_s is not None:
                self._later(self.config.retry_s, self._retry)
            return None
        self.last_session_error = None
        self.sessions += 1
        self._retry_count = 0
        return follow

    def _retry(self) -> None:
        self._spawn(self._run([], is_retry=True))

    async def _exchange(self, follow: _FollowUp) -> None:
        username = self.model.value(self._ms("Username")) or self.config.acs_username or ""
        password = self.model.value(self._ms("Password")) or self.config.acs_password or ""
        url = self.model.value(self._ms("URL")) or self.config.acs_url
        auth = _ChallengeAuth(username, password) if username else None
        ns = self.config.cwmp_ns
        async with self._http_client(auth) as client:

            async def post(body: bytes) -> Envelope | None:
                return await self._post(client, url, body)

            delivered = list(self._pending)
            inform = Inform(
                device_id=self._device_id,
                events=list(self._pending.values()),
                current_time=_now(),
                retry_count=self._retry_count,
                parameters=self._inform_parameters(),
            )
            reply = await post(serialize(inform, cwmp_ns=ns, id=f"inform-{next(_id_counter)}"))
            if reply is None or not isinstance(reply.body, InformResponse):
                raise _SessionError(f"expected InformResponse, got {self._describe(reply)}")
            # The InformResponse acknowledges the events: they are not sent again.
            for key in delivered:
                self._pending.pop(key, None)
            hold = reply.hold_requests
            if not hold:
                await self._send_transfer_completes(post, ns)
            env = await post(b"")
            while True:
                if env is None:
                    if self._transfer_results and not hold:
                        # HoldRequests kept TransferComplete back until now.
                        await self._send_transfer_completes(post, ns)
                        env = await post(b"")
                        continue
                    return
                hold = env.hold_requests
                body = env.body
                name = _rpc_name(body)
                if not isinstance(body, _ACS_REQUESTS):
                    raise _SessionError(f"unexpected {self._describe(env)} from the ACS")
                self.rpcs.append(name)
                answer = self._execute(body, follow)
                if self.config.faults.drop_on == name:
                    raise _Dropped(f"dropped the connection on {name} (drop_on)")
                env = await post(serialize(answer, cwmp_ns=ns, id=env.id))

    async def _send_transfer_completes(
        self, post: Callable[[bytes], Awaitable[Envelope | None]], ns: str
    ) -> None:
        while self._transfer_results:
            tc = self._transfer_results[0]
            reply = await post(serialize(tc, cwmp_ns=ns, id=f"tc-{next(_id_counter)}"))
            if reply is None or not isinstance(reply.body, TransferCompleteResponse):
                raise _SessionError(
                    f"expected TransferCompleteResponse, got {self._describe(reply)}"
                )
            self._transfer_results.pop(0)

    async def _post(self, client: httpx2.AsyncClient, url: str, body: bytes) -> Envelope | None:
        """POST one envelope (or an empty body); None when the ACS answered empty (204, or
        200 without an envelope)."""
        if self.config.faults.latency_s > 0:
            await asyncio.sleep(self.config.faults.latency_s)
        headers = {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": ""} if body else {}
        response = await client.post(url, content=body, headers=headers)
        if response.status_code == 204:
            return None
        if response.status_code != 200:
            raise _SessionError(f"ACS answered HTTP {response.status_code}")
        if not response.content.strip():
            return None
        envelope = parse(response.content, content_type=response.headers.get("content-type"))
        return None if envelope.body is None else envelope

    @staticmethod
    def _describe(envelope: Envelope | None) -> str:
        if envelope is None:
            return "an empty answer"
        if isinstance(envelope.body, CwmpFault):
            return f"fault {envelope.body.code} {envelope.body.string}"
        return _rpc_name(envelope.body)

    # ---- RPCs ----

    def _execute(self, body: object, follow: _FollowUp) -> Message:
        """The answer to one ACS request (a CwmpFault when it fails)."""
        name = _rpc_name(body)
        code = self.config.faults.fault_rpcs.get(name)
        if code is not None:
            return CwmpFault(
                code, fault_text(code), faultcode="Server" if code == 9002 else "Client"
            )
        try:
            return self._dispatch(body, follow)
        except CpeFault as fault:
            return CwmpFault(fault.code, fault.string, fault.parameter_faults)

    def _dispatch(self, body: object, follow: _FollowUp) -> Message:
        model = self.model
        if isinstance(body, GetParameterValues):
            self._refresh_uptime()
            return GetParameterValuesResponse(model.get(body.names))
        if isinstance(body, SetParameterValues):
            model.set(body.parameters)
            self._set(self._ms("ParameterKey"), body.parameter_key)
            if any("PeriodicInform" in pv.name for pv in body.parameters):
                self._reread_periodic()
            return SetParameterValuesResponse(0)
        if isinstance(body, GetParameterNames):
            return GetParameterNamesResponse(model.names(body.path, body.next_level))
        if isinstance(body, AddObject):
            number = model.add_object(body.object_name)
            self._set(self._ms("ParameterKey"), body.parameter_key)
            return AddObjectResponse(number, 0)
        if isinstance(body, DeleteObject):
            model.delete_object(body.object_name)
            self._set(self._ms("ParameterKey"), body.parameter_key)
            return DeleteObjectResponse(0)
        if isinstance(body, Reboot):
            follow.reboot_keys.append(body.command_key)
            return RebootResponse()
        if isinstance(body, FactoryReset):
            follow.factory_reset = True
            return FactoryResetResponse()
        if isinstance(body, Download):
            follow.transfers.append(body)
            return DownloadResponse(1)
        if isinstance(body, Upload):
            if "Configuration File" not in body.file_type and "Log File" not in body.file_type:
                raise CpeFault(9003, f"Unsupported FileType {body.file_type!r}")
            follow.transfers.append(body)
            return UploadResponse(1)
        if isinstance(body, GetRPCMethods):
            return GetRPCMethodsResponse(list(SUPPORTED_RPCS))
        if isinstance(body, ScheduleInform):
            key = body.command_key
            self._later(
                max(0, body.delay_seconds),
                lambda: self._trigger(
                    [EventStruct(SCHEDULED), EventStruct("M ScheduleInform", key)]
                ),
            )
            return ScheduleInformResponse()
        raise CpeFault(9000, f"Method not supported: {_rpc_name(body)}")

    def _reread_periodic(self) -> None:
        enabled = self.model.value(self._ms("PeriodicInformEnable")) == "true"
        try:
            interval = int(self.model.value(self._ms("PeriodicInformInterval")) or "0")
        except ValueError:
            interval = 0
        self._periodic_s = float(interval) if enabled and interval > 0 else None
        self._arm_periodic()

    # ---- after the session: transfers and reboots ----

    async def _perform(self, follow: _FollowUp) -> list[EventStruct]:
        """Carry out what a session left to do; returns the events of the session that
        reports it (empty: no session needed)."""
        reports: list[EventStruct] = []
        new_firmware: str | None = None
        reboot = bool(follow.reboot_keys) or follow.factory_reset
        for transfer in follow.transfers:
            result, version, applies = await self._transfer(transfer)
            if applies:
                reboot = True
                new_firmware = version or new_firmware
            if result is not None:
                self._transfer_results.append(result)
                method = "M Download" if isinstance(transfer, Download) else "M Upload"
                reports.append(EventStruct(method, transfer.command_key))
        if not reboot:
            return [EventStruct(TRANSFER_COMPLETE), *reports] if reports else []
        self._offline = True
        try:
            await asyncio.sleep(self.config.reboot_s)
        finally:
            self._offline = False
        if new_firmware:
            self._firmware = new_firmware
        self.boots += 1
        self._boot_time = time.monotonic()
        if follow.factory_reset:
            # Back to the file's values; only the firmware survives a factory reset.
            self.model = DataModel.load(self.config.model)
            self._pending.clear()
            self._transfer_results.clear()
            self._apply_identity()
            self._arm_periodic()
            return [EventStruct(BOOTSTRAP), EventStruct(BOOT)]
        if new_firmware:
            self._set(self.model.root + "DeviceInfo.SoftwareVersion", new_firmware)
        events = [EventStruct(BOOT)]
        if reports:
            events.append(EventStruct(TRANSFER_COMPLETE))
        events += [EventStruct("M Reboot", key) for key in follow.reboot_keys]
        return events + reports

    async def _transfer(
        self, transfer: Download | Upload
    ) -> tuple[TransferComplete | None, str | None, bool]:
        """One Download or Upload: (its TransferComplete, or None when ``no_transfer_complete``;
        the new firmware version; whether the CPE reboots to apply what it fetched)."""
        faults = self.config.faults
        start = _now()
        version: str | None = None
        applies = False
        if isinstance(transfer, Download):
            if faults.download_fault is not None:
                code, message = faults.download_fault, fault_text(faults.download_fault)
            else:
                code, message, version, applies = await self._download(transfer)
        else:
            code, message = await self._upload(transfer)
        if faults.no_transfer_complete:
            return None, version, applies
        result = TransferComplete(
            command_key=transfer.command_key,
            fault_code=code,
            fault_string=message,
            start_time=start,
            complete_time=_now(),
        )
        return result, version, applies

    def _file_client(self, username: str, password: str) -> httpx2.AsyncClient:
        return self._http_client(_ChallengeAuth(username, password) if username else None)

    def _http_client(self, auth: httpx2.Auth | None) -> httpx2.AsyncClient:
        """A fresh client (own connection pool and cookie jar) on a shared TLS context."""
        return httpx2.AsyncClient(
            auth=auth,
            verify=_tls_context(self.config.tls_verify),
            timeout=self.config.http_timeout_s,
            trust_env=False,
            follow_redirects=True,
            max_redirects=5,
        )

    @staticmethod
    def _status_fault(status: int, generic: int) -> tuple[int, str]:
        if status in (401, 403):
            return 9012, f"{fault_text(9012)} (HTTP {status})"
        if status == 404:
            return 9016, f"{fault_text(9016)} (HTTP 404)"
        return generic, f"{fault_text(generic)} (HTTP {status})"

    async def _download(self, dl: Download) -> tuple[int, str, str | None, bool]:
        """GET the file: (fault code, fault string, firmware version, reboot to apply)."""
        keep_all = dl.file_type.startswith(_CONFIG_DOWNLOAD)
        head = b""
        size = 0
        try:
            async with self._file_client(dl.username, dl.password) as client:
                if self.config.faults.latency_s > 0:
                    await asyncio.sleep(self.config.faults.latency_s)
                async with client.stream("GET", dl.url) as response:
                    if response.status_code >= 300:
                        code, message = self._status_fault(response.status_code, 9010)
                        return code, message, None, False
                    # Firmware is streamed and dropped (1,000 CPEs may download at once);
                    # only its first line (VERSION=…) is kept. Config files are kept whole.
                    limit = _MAX_CONFIG_BYTES if keep_all else 256
                    async for chunk in response.aiter_bytes():
                        if len(head) < limit:
                            head += chunk[: limit - len(head)]
                        size += len(chunk)
        except httpx2.ConnectError as exc:
            return 9015, f"{fault_text(9015)}: {exc}", None, False
        except httpx2.HTTPError as exc:
            return 9017, f"{fault_text(9017)}: {exc}", None, False
        if dl.file_size and size != dl.file_size:
            return (
                9018,
                f"{fault_text(9018)}: {size} bytes, FileSize said {dl.file_size}",
                None,
                False,
            )
        if dl.file_type.startswith(_FIRMWARE):
            first = head.split(b"\n", 1)[0].strip()
            version = None
            if first.startswith(b"VERSION="):
                version = first[len(b"VERSION=") :].decode("utf-8", "replace").strip() or None
            return 0, "", version, True
        if keep_all:
            self._apply_config_file(head.decode("utf-8", "replace"))
            return 0, "", None, True
        return 0, "", None, False

    def _apply_config_file(self, text: str) -> None:
        """A downloaded configuration file (the Upload format): known parameters take its
        values; other lines are ignored, as a CPE ignores foreign settings."""
        for line in text.splitlines():
            name, _, rest = line.partition("\t")
            _vtype, _, value = rest.partition("\t")
            if self.model.value(name) is not None:
                self.model.set_value(name, value)

    async def _upload(self, up: Upload) -> tuple[int, str]:
        """PUT the configuration (or a small log): (fault code, fault string)."""
        if "Log File" in up.file_type:
            content = "".join(f"rpc {name}\n" for name in self.rpcs).encode()
        else:
            self._refresh_uptime()
            content = config_file_text(self.model.parameter_values()).encode()
        try:
            async with self._file_client(up.username, up.password) as client:
                if self.config.faults.latency_s > 0:
                    await asyncio.sleep(self.config.faults.latency_s)
                response = await client.put(
                    up.url, content=content, headers={"Content-Type": "text/plain; charset=utf-8"}
                )
        except httpx2.ConnectError as exc:
            return 9015, f"{fault_text(9015)}: {exc}"
        except httpx2.HTTPError as exc:
            return 9011, f"{fault_text(9011)}: {exc}"
        if response.status_code >= 300:
            return self._status_fault(response.status_code, 9011)
        return 0, ""

    # ---- the connection-request listener ----

    async def _handle_connection_request(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._cr_tasks.add(task)
        self._cr_writers.add(writer)
        try:
            await self._serve_connection_requests(reader, writer)
        except asyncio.CancelledError:
            # Python 3.11's stream server logs an error for a cancelled handler task; a
            # cancelled exchange is just a connection closed early.
            pass
        finally:
            self._cr_writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._cr_tasks.discard(task)

    async def _serve_connection_requests(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        for _ in range(_CR_REQUESTS_PER_CONNECTION):
            try:
                async with asyncio.timeout(_CR_IDLE_S):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
                return
            status, reason, headers, keep_alive = self._answer_connection_request(head)
            try:
                writer.write(_http_response(status, reason, headers, keep_alive))
                await writer.drain()
            except OSError:
                return
            if status == 200:
                self._trigger([EventStruct(CONNECTION_REQUEST)])
            if not keep_alive:
                return

    def _answer_connection_request(self, head: bytes) -> tuple[int, str, dict[str, str], bool]:
        """(status, reason, headers, keep-alive) for one request head."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or len(head) > _CR_HEAD_LIMIT:
            return 400, "Bad Request", {}, False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition(":")
            if sep:
                headers[key.strip().lower()] = value.strip()
        if "content-length" in headers or "transfer-encoding" in headers:
            return 400, "Bad Request", {}, False  # a GET with a body: not worth reading
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        if target.split("?", 1)[0] != "/" + self._cr_path:
            return 404, "Not Found", {}, keep_alive
        if method != "GET":
            return 405, "Method Not Allowed", {"Allow": "GET"}, keep_alive
        if self._offline or self.config.faults.refuse_connection_requests:
            return 503, "Service Unavailable", {"Retry-After": "1"}, False
        username = self.model.value(self._ms("ConnectionRequestUsername")) or ""
        password = self.model.value(self._ms("ConnectionRequestPassword")) or ""
        if password and not self._digest_ok(
            headers.get("authorization", ""), target, username, password
        ):
            challenge = (
                f'Digest realm="{CR_REALM}", qop="auth", nonce="{_new_nonce()}", algorithm=MD5'
            )
            return 401, "Unauthorized", {"WWW-Authenticate": challenge}, keep_alive
        return 200, "OK", {}, keep_alive

    @staticmethod
    def _digest_ok(header: str, target: str, username: str, password: str) -> bool:
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest":
            return False
        try:
            fields = parse_keqv_list(parse_http_list(rest))
        except ValueError:
            return False
        nonce = fields.get("nonce", "")
        if (
            fields.get("username") != username
            or fields.get("realm") != CR_REALM
            or fields.get("uri") != target
            or fields.get("algorithm", "MD5").upper() != "MD5"
            or not _nonce_ok(nonce)
        ):
            return False
        ha1 = _md5(f"{username}:{CR_REALM}:{password}")
        ha2 = _md5(f"GET:{target}")
        qop = fields.get("qop")
        if qop is None:
            expected = _md5(f"{ha1}:{nonce}:{ha2}")
        elif qop == "auth":
            expected = _md5(
                f"{ha1}:{nonce}:{fields.get('nc', '')}:{fields.get('cnonce', '')}:auth:{ha2}"
            )
        else:
            return False
        return hmac.compare_digest(expected, fields.get("response", ""))
