"""The ACS's session engine: CWMP sessions, the CPEs they identify, the jobs they run.

One :class:`AcsEngine` per ACS process. A session follows the reference's state machine —
Inform, then the CPE's own requests, then (after its empty POST) the ACS's requests, one
outstanding at a time — keyed by its cookie, falling back to the TCP connection for CPEs
that drop cookies. An Inform always opens a new session (and ends the CPE's previous one).

Work reaches a session through the ``cwmp_jobs`` table: the helper (in whichever worker
claimed the operation) queues a job and asks the CPE to connect; the session that CPE opens
— in whichever ACS process — takes the job, runs its program, and writes the outcome back
for the helper. Jobs that wait for a later event (a Reboot's BOOT, a Download's
TransferComplete) are finished by the session that brings it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import structlog
from sqlalchemy import func, select

from headless_ops.auth.tokens import ensure_tenant
from headless_ops.config import Settings
from headless_ops.cwmp import soap
from headless_ops.cwmp.auth import Credentials, DigestVerifier, ha1
from headless_ops.cwmp.jobs import (
    PROGRAMS,
    CpeView,
    Finished,
    RpcFault,
    Waiting,
    fault_error,
)
from headless_ops.cwmp.store import CwmpStore, JobState
from headless_ops.errors import Conflict
from headless_ops.helpers.base import DeviceView, HelperError, PermanentError, RetryableError
from headless_ops.helpers.resources import HelperResources
from headless_ops.services.devices import device_view
from headless_ops.store.scheduling import WAKE_CHANNEL, release_deferred
from headless_ops.timeutil import utcnow

__all__ = ["AcsEngine", "Reply", "Session", "SessionLost"]

log = structlog.get_logger(__name__)

COOKIE = "session"
_SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2", "1.3", "1.4")
_CPE_METHODS = ["Inform", "GetRPCMethods", "TransferComplete", "AutonomousTransferComplete"]


#: How long what the ACS knows of a CPE (identity binding, credentials) is trusted. A change
#: through the API of this process applies at once (DeviceService.changed); one made through
#: another process's API, within this time. Credentials that fail are looked up again first.
KNOWN_TTL_S = 60.0
#: A CPE whose credentials failed is looked up again at most this often (a client guessing
#: passwords must not turn every guess into a database read).
RECHECK_AFTER_FAILURE_S = 1.0
#: Routine Informs are written behind, at most this late.
SEEN_FLUSH_S = 1.0
#: Events that need no handling beyond "the CPE is alive".
_ROUTINE_EVENTS = frozenset({"2 PERIODIC", "6 CONNECTION REQUEST"})
#: What an Inform may change that is written at once (and compared with the cache).
_TRACKED = (
    "software_version",
    "hardware_version",
    "connection_request_url",
    "root",
    "cwmp_ns",
    "parameter_key",
)


@dataclass
class _Known:
    """A CPE as the ACS last looked it up."""

    tenant_id: str
    device_id: str
    credentials: Credentials | None
    values: dict[str, Any]
    fetched: float
    #: The inventory holds connection-request credentials the CPE was given.
    cr_ready: bool = True


class SessionLost(Exception):
    """The session ended while a job waited for the CPE's answer."""


class _Throttled(Exception):
    """Auto-registration is over its rate: the CPE is asked to come back later."""


class _Unauthenticated(Exception):
    """An unknown CPE without the shared credentials: challenged, never registered."""


@dataclass
class _TokenBucket:
    """``per_minute`` takes a minute, in a burst of up to as many (0: no limit)."""

    per_minute: int
    tokens: float = 0.0
    at: float | None = None

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        if self.per_minute <= 0:
            return True
        if self.at is None:
            self.tokens = float(self.per_minute)
        else:
            self.tokens = min(
                float(self.per_minute), self.tokens + (now - self.at) * self.per_minute / 60
            )
        self.at = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True

    def give_back(self) -> None:
        """Return a token whose work did not happen."""
        if self.per_minute > 0:
            self.tokens = min(float(self.per_minute), self.tokens + 1)

    def wait_s(self) -> int:
        """Whole seconds until the next token (at least 1)."""
        if self.per_minute <= 0:
            return 1
        return max(1, math.ceil((1 - self.tokens) * 60 / self.per_minute))


@dataclass
class Reply:
    """An HTTP answer to a CPE."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Session:
    """One CWMP session with one CPE."""

    id: str
    cpe: CpeView
    cwmp_ns: str
    conn_key: str
    #: 1: the CPE's requests; 2: the ACS's requests (after the CPE's empty POST).
    state: int = 1
    last_seen: float = field(default_factory=time.monotonic)
    ended: bool = False
    #: The Inform's events as shown in results ("M Reboot <key>"), and their bare codes.
    events: list[str] = field(default_factory=list)
    codes: list[str] = field(default_factory=list)
    outgoing: asyncio.Queue[soap.Message] = field(default_factory=asyncio.Queue)
    reply: tuple[str, str, asyncio.Future[soap.Message]] | None = None
    job: asyncio.Task[None] | None = None
    jobs_run: int = 0
    lingered: bool = False
    wakeup: asyncio.Event = field(default_factory=asyncio.Event)
    rpc_count: int = 0
    #: Connection-request credentials are to be given to the CPE in this session.
    provision: bool = False
    #: Operations were released for this CPE: wait for their jobs before ending.
    expect_work: bool = False
    #: How many times a job was queued for the CPE while this session was live: a session
    #: that found nothing looks again if this moved while it was looking.
    jobs_signalled: int = 0

    def end(self) -> None:
        """Mark it over; a job waiting for the CPE's answer gets :class:`SessionLost`."""
        self.ended = True
        if self.reply is not None and not self.reply[2].done():
            self.reply[2].set_exception(SessionLost("the CWMP session ended"))
        self.wakeup.set()


async def _rpc(session: Session, request: soap.Message) -> soap.Message:
    """Send one ACS request in ``session``; the CPE's answer (a fault raises RpcFault)."""
    if session.ended:
        raise SessionLost("the CWMP session ended")
    session.rpc_count += 1
    rpc_id = f"{session.id[:8]}.{session.rpc_count}"
    future: asyncio.Future[soap.Message] = asyncio.get_running_loop().create_future()
    session.reply = (rpc_id, type(request).__name__, future)
    await session.outgoing.put(request)
    response = await future
    if isinstance(response, soap.CwmpFault):
        raise RpcFault(type(request).__name__, response)
    return response


class _JobContext:
    """What a job program sees, bound to one session."""

    def __init__(self, engine: AcsEngine, session: Session, job: Any) -> None:
        self.engine = engine
        self.session = session
        self.operation_id: str = job.operation_id
        self.attempt: int = job.attempt
        self.operation_type: str = job.operation_type
        self.parameters: dict[str, Any] = dict(job.parameters)
        self.cpe = session.cpe
        self.resources = engine.resources

    async def rpc(self, request: soap.Message) -> soap.Message:
        return await _rpc(self.session, request)

    async def device(self) -> DeviceView:
        record = await self.engine.resources.devices.get(self.cpe.tenant_id, self.cpe.device_id)
        return device_view(record, self.engine.resources.box)

    async def transfer(
        self, kind: str, filename: str, image_id: str | None = None
    ) -> tuple[str, str, str]:
        token = secrets.token_urlsafe(24)
        username = "t" + secrets.token_hex(6)
        password = secrets.token_urlsafe(18)
        progress: dict[str, Any] = {"transfer": kind}
        if image_id is not None:
            progress["image_id"] = image_id
        await self.engine.store.transition(
            self.operation_id,
            self.attempt,
            from_states=(JobState.STARTED,),
            now=utcnow(),
            transfer_token=token,
            transfer_username=username,
            transfer_ha1=ha1(username, password),
            progress=progress,
        )
        base = self.engine.settings.cwmp_base_url
        path = "firmware" if kind == "firmware" else "upload"
        return f"{base}/{path}/{token}/{filename}", username, password


class AcsEngine:
    """Sessions, CPE identification and job execution of one ACS process."""

    def __init__(
        self,
        settings: Settings,
        resources: HelperResources,
        *,
        wake_scheduler: Callable[[], None] | None = None,
    ) -> None:
        self.settings = settings
        self.resources = resources
        self.store = CwmpStore(resources.db)
        self.verifier = DigestVerifier(resources.hasher.hash("headless-ops cwmp nonces").encode())
        self.wake_scheduler = wake_scheduler
        self.sessions: dict[str, Session] = {}
        self.by_conn: dict[str, Session] = {}
        self.by_device: dict[str, Session] = {}
        #: (operation id, attempt) → set when the job changes, for helpers in this process.
        self.job_changed: dict[tuple[str, int], asyncio.Event] = {}
        #: device key → set when its latest Inform has been recorded (status refresh).
        self.informed: dict[str, asyncio.Event] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self.known: dict[str, _Known] = {}
        self._registrations = _TokenBucket(settings.cwmp_register_per_minute)
        #: (tenant, device) -> its device key in ``known``.
        self._known_keys: dict[tuple[str, str], str] = {}
        #: Device changes seen (forget_device), and the count at each device's last one: a
        #: read that a change overtook is not cached.
        self._changes = 0
        self._changed_at: dict[tuple[str, str], int] = {}
        #: Device keys whose Inform is being taken (count of them), before their session.
        self._informing: dict[str, int] = {}
        resources.devices.changed.append(self.forget_device)
        #: (tenant, device) with operations deferred until the CPE shows up: refreshed from
        #: the database every SEEN_FLUSH_S (any worker may defer), added to at once by the
        #: helper of this process.
        self.deferred: set[tuple[str, str]] = set()
        #: Device keys with queued jobs, likewise (refreshed, and told by this process's helper).
        self.queued: set[str] = set()
        #: Keys told while a refresh reads: kept when its snapshot replaces ``queued`` (the
        #: snapshot may have been read before their jobs were committed).
        self._queued_meanwhile: set[str] | None = None
        self._seen: dict[str, dict[str, Any]] = {}
        self.tls = bool(settings.cwmp_tls_cert and settings.cwmp_tls_key)

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the idle-session sweeper and the write-behind of routine Informs."""
        loop = asyncio.get_running_loop()
        if self._sweeper is None:
            self._sweeper = loop.create_task(self._sweep())
        if self._flusher is None:
            self._flusher = loop.create_task(self._flush_loop())

    async def close(self) -> None:
        """End every session and stop the sweeper."""
        for session in list(self.sessions.values()):
            await self._end(session)
        for task in (self._sweeper, self._flusher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._sweeper = self._flusher = None
        await self.flush_seen()
        with contextlib.suppress(ValueError):
            self.resources.devices.changed.remove(self.forget_device)

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(5.0, self.settings.cwmp_session_timeout_s / 3))
            cutoff = time.monotonic() - self.settings.cwmp_session_timeout_s
            for session in list(self.sessions.values()):
                if session.last_seen < cutoff:
                    log.info("cwmp session timed out", device_key=session.cpe.device_key)
                    await self._end(session)

    async def _end(self, session: Session) -> None:
        session.end()
        self.sessions.pop(session.id, None)
        if self.by_conn.get(session.conn_key) is session:
            del self.by_conn[session.conn_key]
        if self.by_device.get(session.cpe.device_key) is session:
            del self.by_device[session.cpe.device_key]
        if session.job is not None and not session.job.done():
            with contextlib.suppress(asyncio.TimeoutError, Exception):
                await asyncio.wait_for(asyncio.shield(session.job), 5)

    def in_session(self, device_key: str) -> bool:
        """Whether this process holds a live session with the CPE (or is taking its Inform)."""
        if device_key in self._informing:
            return True
        session = self.by_device.get(device_key)
        return session is not None and not session.ended

    def job_queued(self, device_key: str) -> None:
        """A job was queued for the CPE: a live session here picks it up."""
        self.queued.add(device_key)
        if self._queued_meanwhile is not None:
            self._queued_meanwhile.add(device_key)
        session = self.by_device.get(device_key)
        if session is not None:
            session.jobs_signalled += 1
            session.wakeup.set()

    def _job_event(self, operation_id: str, attempt: int) -> None:
        event = self.job_changed.get((operation_id, attempt))
        if event is not None:
            event.set()

    # -- HTTP entry point --------------------------------------------------------------

    async def handle(
        self,
        body: bytes,
        *,
        content_type: str | None,
        authorization: str | None,
        cookie: str | None,
        conn_key: str,
    ) -> Reply:
        """Answer one POST from a CPE."""
        try:
            envelope = soap.parse(
                body, content_type=content_type, max_bytes=self.settings.cwmp_max_envelope_bytes
            )
        except soap.SoapError as exc:
            log.warning("cwmp envelope refused", reason=str(exc), conn=conn_key)
            return Reply(exc.status, str(exc).encode(), {"Connection": "close"})
        message = envelope.body
        session = self.sessions.get(cookie) if cookie else None
        if session is None or session.ended:
            session = self.by_conn.get(conn_key)
        if isinstance(message, soap.Inform):
            if session is not None:
                await self._end(session)
            return await self._inform(envelope, message, authorization, conn_key)
        if session is None or session.ended:
            if message is None:
                return Reply(204, headers={"Connection": "close"})  # a stray empty POST
            return Reply(
                400, b"no session: a session starts with an Inform", {"Connection": "close"}
            )
        session.last_seen = time.monotonic()
        if session.state == 1:
            if message is None:
                session.state = 2
                return await self._next_request(session)
            return await self._cpe_request(session, envelope, message)
        # state 2: a response (or fault) to the ACS's outstanding request
        if message is not None:
            self._deliver(session, envelope, message)
        return await self._next_request(session)

    # -- Inform ------------------------------------------------------------------------

    async def _known_cpe(
        self, ident: soap.DeviceId, key: str, authorization: str | None
    ) -> _Known | None:
        """What the ACS needs of a CPE at each Inform, cached for ``KNOWN_TTL_S`` (a change
        of the device through this process's API drops it at once; see KNOWN_TTL_S)."""
        known = self.known.get(key)
        if known is not None and time.monotonic() - known.fetched < KNOWN_TTL_S:
            return known
        started = self._changes
        row = await self.store.device(key)
        if row is None:
            if await self._first_contact(ident, key, authorization) is None:
                return None
            row = await self.store.device(key)
            assert row is not None
            # Operations may wait for this CPE's first Inform ("cpe_never_seen").
            self.deferred.add((row.tenant_id, row.device_id))
        record = await self.resources.devices.get(row.tenant_id, row.device_id)
        view = device_view(record, self.resources.box)
        known = _Known(
            tenant_id=row.tenant_id,
            device_id=row.device_id,
            credentials=self._credentials(view),
            values={k: getattr(row, k) for k in _TRACKED},
            fetched=time.monotonic(),
            cr_ready=bool(view.connection.get("connection_request_password")),
        )
        if self._changed_at.get((row.tenant_id, row.device_id), 0) > started:
            # The device changed while it was being read (a PATCH committed in between):
            # what was read may predate it, so it is not cached.
            return known
        self.known[key] = known
        self._known_keys[(row.tenant_id, row.device_id)] = key
        return known

    def forget_device(self, tenant_id: str, device_id: str) -> None:
        """Drop what is cached of the inventory device (it changed or was deleted): its
        CPE's next Inform reads it again."""
        self._changes += 1
        if len(self._changed_at) > 10_000:
            # Only reads in flight (milliseconds) compare with it: the oldest half can go.
            for old in list(itertools.islice(self._changed_at, 5_000)):
                del self._changed_at[old]
        self._changed_at[(tenant_id, device_id)] = self._changes
        key = self._known_keys.pop((tenant_id, device_id), None)
        if key is not None:
            self.known.pop(key, None)

    def _authenticated(self, known: _Known, authorization: str | None) -> bool:
        return known.credentials is None or self.verifier.verify(
            authorization, "POST", known.credentials, allow_basic=self._basic()
        )

    async def _inform(
        self,
        envelope: soap.Envelope,
        inform: soap.Inform,
        authorization: str | None,
        conn_key: str,
    ) -> Reply:
        if len(self.sessions) >= self.settings.cwmp_max_sessions:
            return Reply(503, b"too many sessions", {"Retry-After": "60"})
        ident = inform.device_id
        if not ident.oui or not ident.serial_number:
            return Reply(400, b"the Inform has no DeviceId OUI/SerialNumber")
        key = soap.device_key(ident)
        now = utcnow()
        try:
            known = await self._known_cpe(ident, key, authorization)
            if (
                known is not None
                and not self._authenticated(known, authorization)
                and authorization
                and time.monotonic() - known.fetched >= RECHECK_AFTER_FAILURE_S
            ):
                # The credentials may have changed since they were cached (through the API of
                # another process): look them up again before refusing.
                self.forget_device(known.tenant_id, known.device_id)
                known = await self._known_cpe(ident, key, authorization)
        except _Throttled:
            log.warning("cwmp auto-registration over its rate; CPE asked to retry", device_key=key)
            retry = {"Retry-After": str(self._registrations.wait_s()), "Connection": "close"}
            return Reply(503, b"too many new CPEs; retry later", retry)
        except _Unauthenticated:
            return self._challenge(key, authorization)
        if known is None:
            log.warning("unknown CPE refused", device_key=key)
            return Reply(403, b"unknown CPE", {"Connection": "close"})
        if not self._authenticated(known, authorization):
            return self._challenge(key, authorization)
        # Authenticated: from now until its session is registered, the CPE counts as in
        # session here. A job queued for it meanwhile goes to that session, instead of a
        # connection request it would ignore while it informs (and a deferral that would
        # wait for its next Inform).
        self._informing[key] = self._informing.get(key, 0) + 1
        try:
            return await self._open_session(envelope, inform, known, key, now, conn_key)
        finally:
            left = self._informing.pop(key) - 1
            if left:
                self._informing[key] = left

    def _challenge(self, key: str, authorization: str | None) -> Reply:
        """401 with a challenge; a failed attempt also ends the connection."""
        scheme = "basic" if self._basic() and self.settings.cwmp_auth != "digest" else "digest"
        headers = {"WWW-Authenticate": self.verifier.challenge(scheme)}
        if authorization:
            headers["Connection"] = "close"
            log.warning("cwmp authentication failed", device_key=key)
        return Reply(401, b"", headers)

    async def _open_session(
        self,
        envelope: soap.Envelope,
        inform: soap.Inform,
        known: _Known,
        key: str,
        now: datetime,
        conn_key: str,
    ) -> Reply:
        """Record an authenticated Inform, open its session, answer InformResponse."""
        ident = inform.device_id
        values = self._inform_values(inform, envelope, now)
        codes = [e.code.strip() for e in inform.events]
        notable = [c for c in codes if c not in _ROUTINE_EVENTS]
        changed = {
            k: values[k] for k in _TRACKED if k in values and values[k] != known.values.get(k)
        }
        if changed or notable:
            # Persisted before the InformResponse acknowledges the events.
            await self.store.record_inform(
                key,
                known.tenant_id,
                known.device_id,
                values,
                now=now,
                firmware_version=values.get("software_version"),
            )
            known.values.update(changed)
        else:
            # A routine Inform (periodic, or the answer to a connection request) that changes
            # nothing but "last seen": written behind, many in one transaction.
            self._seen[key] = {
                "device_key": key,
                "tenant_id": known.tenant_id,
                "device_id": known.device_id,
                "at": now,
                "uptime_s": values.get("uptime_s"),
                "last_events": values.get("last_events"),
            }
        cpe = CpeView(
            device_key=key,
            tenant_id=known.tenant_id,
            device_id=known.device_id,
            root=known.values.get("root") or "InternetGatewayDevice.",
            software_version=known.values.get("software_version"),
            product_class=ident.product_class,
            oui=ident.oui,
            serial_number=ident.serial_number,
        )
        session = Session(
            id=secrets.token_hex(16),
            cpe=cpe,
            cwmp_ns=envelope.cwmp_ns,
            conn_key=conn_key,
            events=[f"{e.code.strip()} {e.command_key}".strip() for e in inform.events],
            codes=codes,
        )
        if "0 BOOTSTRAP" in codes:
            known.cr_ready = False  # a factory reset reverts them on the CPE
        session.provision = not known.cr_ready and self.settings.cwmp_provision_connection_request
        self.sessions[session.id] = session
        self.by_conn[conn_key] = session
        previous = self.by_device.get(key)
        if previous is not None and previous is not session:
            await self._end(previous)
        self.by_device[key] = session
        if notable:
            await self._events(session, inform)
        # Operations deferred because the CPE could not be reached run now, in this session.
        if (known.tenant_id, known.device_id) in self.deferred:
            await self._release_deferred(session, now)
        informed = self.informed.get(key)
        if informed is not None:
            informed.set()
        use_version = None
        if envelope.supported_versions:
            theirs = [v.strip() for v in envelope.supported_versions.split(",")]
            common = [v for v in _SUPPORTED_VERSIONS if v in theirs]
            use_version = common[-1] if common else None
        body = soap.serialize(
            soap.InformResponse(max_envelopes=1),
            cwmp_ns=session.cwmp_ns,
            id=envelope.id,
            use_cwmp_version=use_version,
        )
        return Reply(200, body, self._soap_headers(session, set_cookie=True))

    async def flush_seen(self) -> None:
        """Write the routine Informs received since the last flush."""
        if not self._seen:
            return
        batch, self._seen = list(self._seen.values()), {}
        try:
            await self.store.record_seen(batch, utcnow())
        except Exception:
            log.exception("recording routine Informs failed", count=len(batch))

    def prune_known(self) -> int:
        """Forget cached CPEs older than their TTL (a fleet of millions must not pile up in
        memory); returns how many were dropped."""
        cutoff = time.monotonic() - KNOWN_TTL_S
        stale = [key for key, known in self.known.items() if known.fetched < cutoff]
        for key in stale:
            known = self.known.pop(key)
            self._known_keys.pop((known.tenant_id, known.device_id), None)
        return len(stale)

    async def _release_deferred(self, session: Session, now: datetime) -> int:
        """Make the operations deferred for the CPE of ``session`` (it could not be reached)
        due now, to run in this session; returns how many."""
        cpe = session.cpe
        async with self.resources.db.write() as conn:
            released = await release_deferred(
                conn, cpe.tenant_id, cpe.device_id, now, "device_unreachable"
            )
            if released and self.resources.db.dialect == "postgresql":
                await conn.execute(select(func.pg_notify(WAKE_CHANNEL, "")))
        self.deferred.discard((cpe.tenant_id, cpe.device_id))
        if released:
            session.expect_work = True
            if self.wake_scheduler is not None:
                self.wake_scheduler()
        return released

    async def refresh_deferred(self) -> int:
        """Read which devices have deferred operations and which have queued jobs, from the
        database (any worker may defer, any process may queue); release the deferred
        operations of CPEs in session here. An Inform releases its CPE's operations itself,
        but one deferred as the Inform was taken (recorded just after it looked) would
        otherwise wait for the next Inform. Returns how many were released."""
        self.deferred = await self.store.deferred_devices()
        meanwhile = self._queued_meanwhile = set()
        try:
            queued = await self.store.queued_keys()
        finally:
            self._queued_meanwhile = None
        self.queued = queued | meanwhile
        released = 0
        for session in list(self.by_device.values()):
            cpe = session.cpe
            if not session.ended and (cpe.tenant_id, cpe.device_id) in self.deferred:
                released += await self._release_deferred(session, utcnow())
        return released

    async def _flush_loop(self) -> None:
        rounds = 0
        while True:
            rounds += 1
            if rounds % 60 == 0:
                self.prune_known()
            await self.flush_seen()
            try:
                await self.refresh_deferred()
            except Exception:
                log.exception("reading deferred operations and queued jobs failed")
            await asyncio.sleep(SEEN_FLUSH_S)

    def _basic(self) -> bool:
        return self.tls and self.settings.cwmp_auth in ("auto", "basic")

    def _credentials(self, device: DeviceView) -> Credentials | None:
        c = device.connection
        if c.get("cpe_password"):
            username = str(c.get("cpe_username") or device.name)
            return Credentials(username, ha1(username, str(c["cpe_password"])))
        return self._shared_credentials()

    def _shared_credentials(self) -> Credentials | None:
        if self.settings.cwmp_password:
            username = self.settings.cwmp_username
            return Credentials(username, ha1(username, self.settings.cwmp_password))
        return None

    async def _first_contact(
        self, ident: soap.DeviceId, key: str, authorization: str | None
    ) -> str | None:
        """Bind a new device key to an inventory device: one created for this identity, else
        a new one (auto-registration), else None (refused). Raises :class:`_Unauthenticated`
        when shared credentials are set and the Inform does not carry them (a device is
        registered only for a CPE that proved it belongs to the fleet), :class:`_Throttled`
        when registrations are over their rate."""
        now = utcnow()
        existing = await self.store.find_inventory_device(
            ident.oui, ident.product_class, ident.serial_number
        )
        if existing is not None:
            tenant_id, device_id = existing.tenant_id, existing.id
        elif self.settings.cwmp_auto_register:
            shared = self._shared_credentials()
            if shared is not None and not self.verifier.verify(
                authorization, "POST", shared, allow_basic=self._basic()
            ):
                raise _Unauthenticated
            if not self._registrations.take(time.monotonic()):
                raise _Throttled
            try:
                tenant_id = await ensure_tenant(self.resources.db, self.settings.cwmp_tenant)
                device_id = await self._register(tenant_id, ident, key)
            except BaseException:
                self._registrations.give_back()  # nothing was registered
                raise
        else:
            return None
        await self.store.bind_device(
            device_key=key,
            tenant_id=tenant_id,
            device_id=device_id,
            oui=ident.oui,
            product_class=ident.product_class,
            serial_number=ident.serial_number,
            manufacturer=ident.manufacturer or None,
            now=now,
        )
        log.info("cwmp device bound", device_key=key, device_id=device_id)
        return str(device_id)

    async def _register(self, tenant_id: str, ident: soap.DeviceId, key: str) -> str:
        devices = self.resources.devices
        connection: dict[str, Any] = {"serial_number": ident.serial_number[:64]}
        if len(ident.oui) == 6:
            connection["oui"] = ident.oui
        if ident.product_class:
            connection["product_class"] = ident.product_class[:64]
        for suffix in ("", "-2", "-3", "-" + secrets.token_hex(3)):
            body = {
                "name": (key[:120] + suffix),
                "protocol": "cwmp",
                "connection": connection,
                "labels": {"registered_by": "acs"},
            }
            try:
                record = await devices.create(tenant_id, devices.parse_new(body))
            except Conflict:
                continue
            return record.id
        raise RuntimeError(f"could not register {key}")

    @staticmethod
    def _inform_values(inform: soap.Inform, envelope: soap.Envelope, now: Any) -> dict[str, Any]:
        values: dict[str, Any] = {
            "cwmp_ns": envelope.cwmp_ns,
            "last_inform_at": now,
            "last_events": [f"{e.code} {e.command_key}".strip() for e in inform.events],
        }
        for p in inform.parameters:
            name = p.name
            if "root" not in values and "." in name:
                values["root"] = name.split(".", 1)[0] + "."
            if name.endswith(".DeviceInfo.SoftwareVersion"):
                values["software_version"] = p.value[:128]
            elif name.endswith(".DeviceInfo.HardwareVersion"):
                values["hardware_version"] = p.value[:128]
            elif name.endswith(".ManagementServer.ConnectionRequestURL"):
                values["connection_request_url"] = p.value[:1024]
            elif name.endswith(".ManagementServer.ParameterKey"):
                values["parameter_key"] = p.value[:64]
            elif name.endswith(".DeviceInfo.UpTime"):
                with contextlib.suppress(ValueError):
                    values["uptime_s"] = int(p.value)
        return values

    # -- events of an Inform finish waiting jobs ---------------------------------------

    async def _events(self, session: Session, inform: soap.Inform) -> None:
        waiting = await self.store.jobs(session.cpe.device_key, JobState.WAITING)
        if not waiting:
            return
        keys = {e.command_key for e in inform.events if e.code.strip().startswith("M ")}
        boot = "1 BOOT" in session.codes
        bootstrap = "0 BOOTSTRAP" in session.codes
        for job in waiting:
            progress = dict(job.progress or {})
            kind = progress.get("kind")
            version = session.cpe.software_version
            if kind == "boot" and (job.command_key in keys or boot):
                await self._finish(
                    job,
                    result={
                        "rebooted": True,
                        "events": session.events,
                        "firmware_version": version,
                        "previous_version": progress.get("previous_version"),
                    },
                )
            elif kind == "bootstrap" and (bootstrap or boot):
                await self._finish(
                    job,
                    result={
                        "factory_reset": True,
                        "bootstrap": bootstrap,
                        "events": session.events,
                        "firmware_version": version,
                    },
                )
            elif kind == "transfer" and progress.get("transfer_done"):
                await self._check_version(job, session, rebooted=boot or job.command_key in keys)

    async def _check_version(self, job: Any, session: Session, *, rebooted: bool) -> None:
        """A firmware job whose transfer completed: the version the CPE now reports decides."""
        progress = dict(job.progress or {})
        target = progress.get("target")
        version = session.cpe.software_version
        result = {
            "previous_version": progress.get("previous_version"),
            "firmware_version": version,
            "image_id": progress.get("image_id"),
            "sha256": progress.get("sha256"),
            "version_verified": version == target,
        }
        if version == target:
            await self._finish(job, result=result)
        elif rebooted:
            await self._finish(
                job,
                error=PermanentError(
                    "version_mismatch",
                    f"after the download the CPE reports version {version or '(none)'}, "
                    f"expected {target}",
                ),
            )
        else:
            progress["transfer_done"] = True
            await self.store.transition(
                job.operation_id,
                job.attempt,
                from_states=(JobState.WAITING,),
                now=utcnow(),
                progress=progress,
            )

    # -- the CPE's requests ------------------------------------------------------------

    async def _cpe_request(
        self, session: Session, envelope: soap.Envelope, message: object
    ) -> Reply:
        response: soap.Message
        if isinstance(message, soap.TransferComplete):
            await self._transfer_complete(session, message)
            response = soap.TransferCompleteResponse()
        elif isinstance(message, soap.AutonomousTransferComplete):
            log.info(
                "autonomous transfer complete",
                device_key=session.cpe.device_key,
                file_type=message.file_type,
                fault_code=message.fault_code,
            )
            response = soap.AutonomousTransferCompleteResponse()
        elif isinstance(message, soap.GetRPCMethods):
            response = soap.GetRPCMethodsResponse(methods=list(_CPE_METHODS))
        elif isinstance(message, soap.RequestDownload):
            response = soap.RequestDownloadResponse()
        else:
            name = getattr(message, "name", type(message).__name__)
            response = soap.CwmpFault(
                code=8000, string=f"Method not supported: {name}", faultcode="Server"
            )
        body = soap.serialize(response, cwmp_ns=session.cwmp_ns, id=envelope.id)
        return Reply(200, body, self._soap_headers(session))

    async def _transfer_complete(self, session: Session, message: soap.TransferComplete) -> None:
        job = await self.store.job_by(command_key=message.command_key)
        if job is None or job.state not in (JobState.STARTED, JobState.WAITING):
            return  # unknown or already handled: acknowledged all the same (idempotent)
        if message.fault_code:
            fault = soap.CwmpFault(code=message.fault_code, string=message.fault_string)
            await self._finish(job, error=fault_error("TransferComplete", fault))
            return
        if job.operation_type == "firmware_update":
            rebooted = "1 BOOT" in session.codes or "M Download" in session.codes
            await self._check_version(job, session, rebooted=rebooted)
        else:
            saved = (job.progress or {}).get("saved")
            if saved is None:
                await self._finish(
                    job,
                    error=RetryableError(
                        "upload_missing", "the CPE reported the upload done, but none arrived"
                    ),
                )
            else:
                await self._finish(job, result=saved)

    # -- the ACS's requests ------------------------------------------------------------

    def _deliver(self, session: Session, envelope: soap.Envelope, message: object) -> None:
        pending = session.reply
        if pending is None or pending[2].done():
            log.warning(
                "unexpected CPE message",
                device_key=session.cpe.device_key,
                message=type(message).__name__,
            )
            return
        _rpc_id, method, future = pending
        session.reply = None
        if isinstance(message, soap.CwmpFault) or type(message).__name__ == method + "Response":
            future.set_result(message)  # type: ignore[arg-type]
        else:
            future.set_exception(
                RetryableError(
                    "invalid_response",
                    f"the CPE answered {type(message).__name__} to {method}",
                )
            )

    async def _next_request(self, session: Session) -> Reply:
        """The next ACS request of this session, or 204 when there is nothing more."""
        while not session.ended:
            if session.provision and session.job is None:
                session.provision = False
                session.job = asyncio.get_running_loop().create_task(self._provision(session))
            elif session.job is None or session.job.done():
                if session.job is not None:
                    session.job = None
                    session.jobs_run += 1
                signalled = session.jobs_signalled
                queued = (
                    await self.store.jobs(session.cpe.device_key, JobState.QUEUED)
                    if self._may_have_jobs(session)
                    else []
                )
                if session.ended:
                    # Replaced by a new session of the CPE during the read: that one runs
                    # the jobs (this one's CPE has gone on to the new one).
                    break
                if queued:
                    session.job = asyncio.get_running_loop().create_task(
                        self._run_job(session, queued[0])
                    )
                    session.lingered = False
                elif session.jobs_signalled != signalled:
                    # An attempt queued a job while the store was read (too late for that
                    # read) and, finding this session live, sent no connection request: it
                    # would wait for a session that never comes. From here to the session's
                    # end there is no await, so a later attempt finds the session ended.
                    continue
                elif (session.jobs_run or session.expect_work) and not session.lingered:
                    # Another operation of this CPE may fall due now that one has finished,
                    # or the ones released by its Inform are on their way to a worker.
                    session.lingered = True
                    session.wakeup.clear()
                    linger = self.settings.cwmp_session_linger_s
                    if session.expect_work and not session.jobs_run:
                        linger = max(linger, min(5.0, self.settings.cwmp_session_timeout_s / 2))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(session.wakeup.wait(), linger)
                    continue
                else:
                    break
            getter = asyncio.ensure_future(session.outgoing.get())
            assert session.job is not None
            done, _ = await asyncio.wait(
                {getter, session.job},
                timeout=self.settings.cwmp_session_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter in done:
                request = getter.result()
                assert session.reply is not None
                body = soap.serialize(request, cwmp_ns=session.cwmp_ns, id=session.reply[0])
                session.last_seen = time.monotonic()
                return Reply(200, body, self._soap_headers(session))
            getter.cancel()
            if not done:  # the job neither asked nor ended: give up on this session
                session.job.cancel()
                break
        await self._end(session)
        return Reply(204, b"", {"Connection": "close"})

    async def _provision(self, session: Session) -> None:
        """Give the CPE connection-request credentials of its own (SetParameterValues) and
        keep them, sealed, in the inventory: the ACS can then always reach it with Digest."""
        cpe = session.cpe
        username = cpe.device_key[:64]
        password = secrets.token_urlsafe(18)
        ms = f"{cpe.root}ManagementServer."
        request = soap.SetParameterValues(
            parameters=[
                soap.ParameterValue(f"{ms}ConnectionRequestUsername", username),
                soap.ParameterValue(f"{ms}ConnectionRequestPassword", password),
            ],
            parameter_key="",
        )
        try:
            await _rpc(session, request)
        except (RpcFault, SessionLost, HelperError) as exc:
            log.warning(
                "connection-request credentials not set", device_key=cpe.device_key, reason=str(exc)
            )
            return
        from headless_ops.services.devices import DeviceUpdate

        await self.resources.devices.update(
            cpe.tenant_id,
            cpe.device_id,
            DeviceUpdate(
                connection={
                    "connection_request_username": username,
                    "connection_request_password": password,
                }
            ),
        )
        known = self.known.get(cpe.device_key)
        if known is not None:
            known.cr_ready = True
        log.info("connection-request credentials set", device_key=cpe.device_key)

    def _may_have_jobs(self, session: Session) -> bool:
        """Whether the CPE may have queued jobs: looked up only then, so that a routine
        periodic session costs no query. A job queued by another process comes with a
        connection request (whose session says so), or is known within SEEN_FLUSH_S."""
        return (
            session.cpe.device_key in self.queued
            or session.jobs_signalled > 0
            or session.jobs_run > 0
            or session.expect_work
            or any(code != "2 PERIODIC" for code in session.codes)
        )

    async def _run_job(self, session: Session, job: Any) -> None:
        now = utcnow()
        taken = await self.store.transition(
            job.operation_id,
            job.attempt,
            from_states=(JobState.QUEUED,),
            now=now,
            state=JobState.STARTED,
        )
        if not taken:
            return  # another session took it
        self._job_event(job.operation_id, job.attempt)
        structlog.contextvars.bind_contextvars(operation_id=job.operation_id)
        try:
            program = PROGRAMS[job.operation_type]
            outcome = await program(_JobContext(self, session, job))
        except HelperError as exc:
            await self._finish(job, error=exc)
            return
        except SessionLost:
            await self._finish(
                job,
                error=RetryableError(
                    "session_lost", "the CWMP session ended before the CPE answered"
                ),
            )
            return
        except asyncio.CancelledError:
            await self._finish(
                job, error=RetryableError("session_timeout", "the CPE stopped answering")
            )
            raise
        except Exception as exc:
            log.exception("cwmp job failed", operation_id=job.operation_id)
            await self._finish(
                job, error=PermanentError("acs_error", f"{type(exc).__name__}: {exc}")
            )
            return
        finally:
            structlog.contextvars.unbind_contextvars("operation_id")
        if isinstance(outcome, Finished):
            await self._finish(job, result=outcome.result)
        elif isinstance(outcome, Waiting):
            current = await self.store.job(job.operation_id, job.attempt)
            progress = dict((current.progress if current is not None else None) or {})
            progress.update(outcome.progress, kind=outcome.kind)
            await self.store.transition(
                job.operation_id,
                job.attempt,
                from_states=(JobState.STARTED,),
                now=utcnow(),
                state=JobState.WAITING,
                command_key=outcome.command_key,
                progress=progress,
            )
            self._job_event(job.operation_id, job.attempt)

    async def _finish(
        self,
        job: Any,
        *,
        result: dict[str, Any] | None = None,
        error: HelperError | None = None,
    ) -> None:
        values: dict[str, Any] = {"state": JobState.DONE, "result": result}
        if error is not None:
            values["error"] = {
                "code": error.code,
                "message": error.message,
                "retryable": error.retryable,
            }
        await self.store.transition(
            job.operation_id,
            job.attempt,
            from_states=(JobState.QUEUED, JobState.STARTED, JobState.WAITING),
            now=utcnow(),
            **values,
        )
        self._job_event(job.operation_id, job.attempt)

    # -- transfers (served by the ACS's HTTP endpoints) --------------------------------

    async def transfer_job(self, token: str, authorization: str | None, method: str) -> Any:
        """The job of a transfer URL whose credentials ``authorization`` proves, else None."""
        job = await self.store.job_by(token=token)
        if job is None or job.state == JobState.DONE or not job.transfer_username:
            return None
        credentials = Credentials(job.transfer_username, job.transfer_ha1)
        if not self.verifier.verify(authorization, method, credentials, allow_basic=True):
            return False
        return job

    async def upload_received(self, job: Any, data: bytes) -> dict[str, Any]:
        """Store an uploaded configuration as the job's backup (finished at TransferComplete)."""
        params = dict(job.parameters)
        saved = await self.resources.backups.save(
            tenant_id=job.tenant_id,
            device_id=job.device_id,
            operation_id=job.operation_id,
            data=data,
            location=str(params["backup_location"]),
            compression=bool(params.get("compression", False)),
            retention_days=params.get("retention_days"),
            method="upload",
        )
        progress = dict(job.progress or {})
        progress["saved"] = saved
        await self.store.transition(
            job.operation_id,
            job.attempt,
            from_states=(JobState.STARTED, JobState.WAITING),
            now=utcnow(),
            progress=progress,
        )
        return saved

    # -- helpers -----------------------------------------------------------------------

    def _soap_headers(self, session: Session, *, set_cookie: bool = False) -> dict[str, str]:
        headers = {"Content-Type": 'text/xml; charset="utf-8"'}
        if set_cookie:
            headers["Set-Cookie"] = f"{COOKIE}={session.id}; Path=/; HttpOnly"
        return headers
