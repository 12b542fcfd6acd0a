"""Simulated CPEs against a scripted ACS, over real sockets.

The ACS here is a small raw asyncio HTTP/1.1 server written for the test (keep-alive,
Content-Length bodies, Basic/Digest challenges, a session cookie). It answers each session
from a script (the ACS requests to send after the CPE's empty POST), records everything the
CPE sent, and also serves firmware images and accepts uploads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import os
import secrets
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.request import parse_http_list, parse_keqv_list

import httpx2
import pytest

from headless_ops.cwmp.soap import (
    CWMP_1_2,
    AddObject,
    AddObjectResponse,
    CwmpFault,
    DeleteObject,
    DeleteObjectResponse,
    Download,
    DownloadResponse,
    Envelope,
    FactoryReset,
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
    SetParameterValues,
    SetParameterValuesResponse,
    TransferComplete,
    TransferCompleteResponse,
    Upload,
    UploadResponse,
    parse,
    serialize,
)
from headless_ops.simulator import CpeConfig, CpeFaults, Fleet, SimulatedCpe

ACS_USER, ACS_PASSWORD = "acs-user", "acs-secret"
FILE_USER, FILE_PASSWORD = "fw-user", "fw-secret"
CR_USER, CR_PASSWORD = "cr-user", "cr-secret"
WAIT_S = 15.0

RAW_VENDOR_RPC = (
    '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/" '
    'xmlns:cwmp="urn:dslforum-org:cwmp-1-0"><soap-env:Header>'
    '<cwmp:ID soap-env:mustUnderstand="1">{id}</cwmp:ID></soap-env:Header><soap-env:Body>'
    "<cwmp:X_VENDOR_Blink><Times>3</Times></cwmp:X_VENDOR_Blink></soap-env:Body></soap-env:Envelope>"
)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


@dataclass
class AcsSession:
    """One CWMP session as the ACS saw it."""

    received: list[Envelope] = field(default_factory=list)  # every POST; body None: empty
    cookies: list[str | None] = field(default_factory=list)  # Cookie header of each POST
    sent_ids: list[str] = field(default_factory=list)  # cwmp:IDs of the ACS requests
    cookie: str = ""
    ended: bool = False  # the ACS answered 204
    dropped: bool = False  # the connection closed before that

    @property
    def inform(self) -> Inform:
        body = self.received[0].body
        assert isinstance(body, Inform)
        return body

    @property
    def events(self) -> list[str]:
        """Event codes, "M ..." ones with their command key."""
        return [f"{e.code} {e.command_key}".strip() for e in self.inform.events]

    @property
    def params(self) -> dict[str, str]:
        return {p.name: p.value for p in self.inform.parameters}

    def answers(self) -> list[Envelope]:
        """What the CPE posted after its empty POST (its responses and faults)."""
        empty = next(i for i, env in enumerate(self.received) if env.body is None)
        return [env for env in self.received[empty + 1 :] if env.body is not None]

    def bodies(self, cls: type[Any]) -> list[Any]:
        return [env.body for env in self.received if isinstance(env.body, cls)]


@dataclass
class _Conn:
    session: AcsSession | None = None


class ScriptedAcs:
    """A scripted ACS on 127.0.0.1; ``plans[i]`` are the requests of the i-th session."""

    def __init__(self, auth: str | None = "digest") -> None:
        self.auth = auth  # "digest", "basic" or None
        self.plans: list[list[Message | str]] = []
        self.sessions: list[AcsSession] = []
        self.files: dict[str, bytes] = {}
        self.uploads: dict[str, bytes] = {}
        self.file_auth: list[str | None] = []
        self.unauthorized = 0
        self._by_cookie: dict[str, tuple[AcsSession, list[Message | str]]] = {}
        self._nonces: set[str] = set()
        self._ids = 0
        self._changed = asyncio.Condition()
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None
        self.base = ""

    @property
    def url(self) -> str:
        return self.base + "/acs"

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.base = f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        if self._tasks:  # handlers end on their own once their sockets are closed
            await asyncio.wait(set(self._tasks), timeout=10)
        await self._server.wait_closed()

    def finished(self) -> list[AcsSession]:
        return [s for s in self.sessions if s.ended or s.dropped]

    async def wait_for(self, predicate: Callable[[], bool], within: float = WAIT_S) -> None:
        """Until ``predicate()`` holds: woken by the ACS's own changes, and polled for state
        elsewhere (the CPE's counters)."""
        async with asyncio.timeout(within):
            while not predicate():
                async with self._changed:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._changed.wait(), 0.05)

    async def wait_sessions(self, count: int) -> list[AcsSession]:
        await self.wait_for(lambda: len(self.finished()) >= count)
        return self.finished()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    # ---- HTTP ----

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        conn = _Conn()
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, OSError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    key, sep, value = line.partition(":")
                    if sep:
                        headers[key.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                body = await reader.readexactly(length) if length else b""
                status, extra, payload = await self._route(conn, method, target, headers, body)
                reason = {200: "OK", 204: "No Content", 401: "Unauthorized", 404: "Not Found"}
                out = [
                    f"HTTP/1.1 {status} {reason.get(status, 'X')}",
                    f"Content-Length: {len(payload)}",
                ]
                out += [f"{k}: {v}" for k, v in extra.items()]
                writer.write(("\r\n".join(out) + "\r\n\r\n").encode("latin-1") + payload)
                await writer.drain()
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            if conn.session is not None and not conn.session.ended:
                conn.session.dropped = True
                await self._notify()
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _authorized(self, header: str, method: str, target: str) -> bool:
        if self.auth == "basic":
            good = base64.b64encode(f"{ACS_USER}:{ACS_PASSWORD}".encode()).decode()
            return header == f"Basic {good}"
        scheme, _, rest = header.partition(" ")
        if scheme.lower() != "digest":
            return False
        f = parse_keqv_list(parse_http_list(rest))
        if f.get("nonce") not in self._nonces or f.get("username") != ACS_USER:
            return False
        ha1 = _md5(f"{ACS_USER}:acs-test:{ACS_PASSWORD}")
        ha2 = _md5(f"{method}:{f.get('uri')}")
        want = _md5(f"{ha1}:{f['nonce']}:{f.get('nc')}:{f.get('cnonce')}:auth:{ha2}")
        return f.get("uri") == target and f.get("response") == want

    async def _route(
        self, conn: _Conn, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        if target.startswith("/files/") or target.startswith("/upload/"):
            return self._file(method, target, headers, body)
        auth = headers.get("authorization", "")
        if self.auth and not self._authorized(auth, method, target):
            self.unauthorized += 1
            if self.auth == "basic":
                return 401, {"WWW-Authenticate": 'Basic realm="acs-test"'}, b""
            nonce = secrets.token_hex(8)
            self._nonces.add(nonce)
            challenge = f'Digest realm="acs-test", qop="auth", nonce="{nonce}", algorithm=MD5'
            return 401, {"WWW-Authenticate": challenge}, b""
        envelope = parse(body)
        xml = {"Content-Type": 'text/xml; charset="utf-8"'}
        if isinstance(envelope.body, Inform):
            session = AcsSession(cookie=secrets.token_hex(8))
            session.received.append(envelope)
            session.cookies.append(headers.get("cookie"))
            self.sessions.append(session)
            plan = self.plans.pop(0) if self.plans else []
            self._by_cookie[session.cookie] = (session, plan)
            conn.session = session
            await self._notify()
            reply = serialize(InformResponse(), cwmp_ns=envelope.cwmp_ns, id=envelope.id)
            return 200, {**xml, "Set-Cookie": f"session={session.cookie}; Path=/"}, reply
        cookie = headers.get("cookie", "")
        key = cookie.removeprefix("session=")
        session, plan = self._by_cookie.get(key) or (conn.session, [])
        assert session is not None, "a POST outside any session"
        session.received.append(envelope)
        session.cookies.append(headers.get("cookie"))
        if isinstance(envelope.body, TransferComplete):
            reply = serialize(TransferCompleteResponse(), cwmp_ns=envelope.cwmp_ns, id=envelope.id)
            return 200, xml, reply
        if plan:
            request = plan.pop(0)
            self._ids += 1
            rpc_id = f"acs-{self._ids}"
            session.sent_ids.append(rpc_id)
            if isinstance(request, str):
                return 200, xml, request.format(id=rpc_id).encode()
            return 200, xml, serialize(request, cwmp_ns=session.received[0].cwmp_ns, id=rpc_id)
        session.ended = True
        await self._notify()
        return 204, {}, b""

    def _file(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        auth = headers.get("authorization")
        self.file_auth.append(auth)
        good = "Basic " + base64.b64encode(f"{FILE_USER}:{FILE_PASSWORD}".encode()).decode()
        if auth != good:
            return 401, {"WWW-Authenticate": 'Basic realm="files"'}, b""
        name = target.split("/", 2)[2]
        if method == "PUT":
            self.uploads[name] = body
            return 204, {}, b""
        if name not in self.files:
            return 404, {}, b""
        return 200, {"Content-Type": "application/octet-stream"}, self.files[name]


@pytest.fixture
async def acs() -> AsyncIterator[ScriptedAcs]:
    server = ScriptedAcs()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
async def new_cpe(acs: ScriptedAcs) -> AsyncIterator[Callable[..., SimulatedCpe]]:
    made: list[SimulatedCpe] = []

    def make(**overrides: Any) -> SimulatedCpe:
        settings: dict[str, Any] = {
            "acs_url": acs.url,
            "serial_number": f"T{len(made) + 1:05d}",
            "model": "tr181",
            "acs_username": ACS_USER,
            "acs_password": ACS_PASSWORD,
            "cr_username": CR_USER,
            "cr_password": CR_PASSWORD,
            "reboot_s": 0.2,
            "retry_s": None,
        }
        settings.update(overrides)
        cpe = SimulatedCpe(CpeConfig(**settings))
        made.append(cpe)
        return cpe

    yield make
    for cpe in made:
        await cpe.close()


async def connection_request(
    cpe: SimulatedCpe, username: str = CR_USER, password: str = CR_PASSWORD, url: str | None = None
) -> int:
    async with httpx2.AsyncClient(auth=httpx2.DigestAuth(username, password), timeout=10) as c:
        response = await c.get(url or cpe.connection_request_url)
        return response.status_code


# ---- sessions ----


@pytest.mark.parametrize("model", ["tr098", "tr181"])
async def test_scripted_session_gpv_spv(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe], model: str
) -> None:
    cpe = new_cpe(model=model, serial_number="SN-42", software_version="7.7.7")
    root = cpe.model.root
    pk = root + "DeviceInfo.ProvisioningCode"
    interval = root + "ManagementServer.PeriodicInformInterval"
    acs.plans.append(
        [
            GetParameterValues([root + "DeviceInfo.SoftwareVersion", root + "ManagementServer."]),
            SetParameterValues(
                [ParameterValue(pk, "PROV-1"), ParameterValue(interval, "120", "xsd:unsignedInt")],
                parameter_key="key-1",
            ),
        ]
    )
    await cpe.start()
    assert cpe.last_session_error is None
    [session] = acs.sessions
    assert session.ended and not session.dropped
    # The Inform: identity, events, forced parameters.
    inform = session.inform
    assert inform.device_id.serial_number == "SN-42"
    assert inform.device_id.oui == cpe.model.device_id["OUI"]
    assert inform.device_id.product_class == cpe.model.device_id["ProductClass"]
    assert session.events == ["0 BOOTSTRAP", "1 BOOT"]
    assert session.received[0].id  # a cwmp:ID on the Inform
    params = session.params
    assert params[root + "ManagementServer.ConnectionRequestURL"] == cpe.connection_request_url
    assert params[root + "DeviceInfo.SoftwareVersion"] == "7.7.7"
    assert params[root + "ManagementServer.ParameterKey"] == ""
    assert root + "DeviceInfo.UpTime" in params
    assert root + "DeviceInfo.HardwareVersion" in params
    assert (root + "DeviceSummary" if model == "tr098" else "Device.RootDataModelVersion") in params
    # Digest: challenged once, then the whole session authenticated (no second 401).
    assert acs.unauthorized == 1
    # Cookie echoed on every POST after the InformResponse; then the empty POST.
    assert session.cookies[0] is None
    assert session.cookies[1:] == [f"session={session.cookie}"] * (len(session.received) - 1)
    assert session.received[1].body is None
    # The answers, with the IDs echoed.
    gpv, spv = session.answers()
    assert [gpv.id, spv.id] == session.sent_ids
    assert isinstance(gpv.body, GetParameterValuesResponse)
    values = {p.name: p for p in gpv.body.parameters}
    assert values[root + "DeviceInfo.SoftwareVersion"].value == "7.7.7"
    assert values[interval].type == "xsd:unsignedInt"
    assert values[root + "ManagementServer.URL"].value == acs.url
    assert isinstance(spv.body, SetParameterValuesResponse) and spv.body.status == 0
    assert cpe.model.value(pk) == "PROV-1"
    assert cpe.model.value(interval) == "120"
    assert cpe.model.value(root + "ManagementServer.ParameterKey") == "key-1"
    assert cpe.rpcs == ["GetParameterValues", "SetParameterValues"]
    assert cpe.sessions == 1
    # The next Inform reports the new ParameterKey.
    await cpe.inform("2 PERIODIC")
    assert acs.sessions[1].events == ["2 PERIODIC"]
    assert acs.sessions[1].params[root + "ManagementServer.ParameterKey"] == "key-1"


async def test_gpn_add_delete_and_other_rpcs(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe(cwmp_ns=CWMP_1_2)
    acs.plans.append(
        [
            GetParameterNames("Device.NAT.", True),
            AddObject("Device.NAT.PortMapping.", "add-1"),
            SetParameterValues(
                [ParameterValue("Device.NAT.PortMapping.1.ExternalPort", "8443", "xsd:unsignedInt")]
            ),
            DeleteObject("Device.WiFi.SSID.2.", "del-1"),
            GetRPCMethods(),
            ScheduleInform(1, "sched-1"),
            RAW_VENDOR_RPC,
        ]
    )
    await cpe.start()
    session = acs.sessions[0]
    assert session.received[0].cwmp_ns == CWMP_1_2
    gpn, add, spv, delete, methods, sched, vendor = (e.body for e in session.answers())
    assert isinstance(gpn, GetParameterNamesResponse)
    assert {p.name for p in gpn.parameters} == {
        "Device.NAT.PortMappingNumberOfEntries",
        "Device.NAT.PortMapping.",
    }
    assert add == AddObjectResponse(1, 0)
    assert isinstance(spv, SetParameterValuesResponse)
    assert delete == DeleteObjectResponse(0)
    assert isinstance(methods, GetRPCMethodsResponse) and "Download" in methods.methods
    assert type(sched).__name__ == "ScheduleInformResponse"
    assert isinstance(vendor, CwmpFault) and vendor.code == 9000
    assert cpe.model.value("Device.NAT.PortMapping.1.ExternalPort") == "8443"
    assert not cpe.model.exists("Device.WiFi.SSID.2.")
    assert cpe.model.value("Device.ManagementServer.ParameterKey") == "del-1"
    assert cpe.rpcs[-1] == "X_VENDOR_Blink"
    # ScheduleInform: a session with "3 SCHEDULED" + "M ScheduleInform <key>" a second later.
    [_, scheduled] = await acs.wait_sessions(2)
    assert scheduled.events == ["3 SCHEDULED", "M ScheduleInform sched-1"]


async def test_spv_fault_and_injected_faults(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe(faults=CpeFaults(fault_rpcs={"GetParameterNames": 9002}))
    acs.plans.append(
        [
            SetParameterValues(
                [
                    ParameterValue("Device.Time.NTPServer1", "ok.example"),
                    ParameterValue("Device.DeviceInfo.SerialNumber", "nope"),
                    ParameterValue("Device.Time.Enable", "maybe", "xsd:boolean"),
                ],
                "k",
            ),
            GetParameterNames("Device.", True),
            GetParameterValues(["Device.DeviceInfo.NoSuch"]),
        ]
    )
    await cpe.start()
    spv, gpn, gpv = acs.sessions[0].answers()
    assert isinstance(spv.body, CwmpFault) and spv.body.code == 9003
    assert {(f.name, f.code) for f in spv.body.set_parameter_values_faults} == {
        ("Device.DeviceInfo.SerialNumber", 9008),
        ("Device.Time.Enable", 9007),
    }
    assert spv.id == acs.sessions[0].sent_ids[0]
    assert cpe.model.value("Device.Time.NTPServer1") == "0.pool.ntp.org"  # atomic
    assert cpe.model.value("Device.ManagementServer.ParameterKey") == ""  # not on a fault
    assert isinstance(gpn.body, CwmpFault) and gpn.body.code == 9002
    assert isinstance(gpv.body, CwmpFault) and gpv.body.code == 9005
    assert acs.sessions[0].ended
    assert cpe.last_session_error is None


async def test_drop_on_closes_the_connection_then_retries(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe(faults=CpeFaults(drop_on="SetParameterValues"), retry_s=0.2)
    acs.plans.append(
        [
            GetParameterValues(["Device.Time.NTPServer1"]),
            SetParameterValues([ParameterValue("Device.Time.NTPServer1", "dropped.example")]),
        ]
    )
    await cpe.start()
    assert cpe.last_session_error is not None and "drop_on" in cpe.last_session_error
    assert cpe.sessions == 0 and cpe.failed_sessions == 1
    first = (await acs.wait_sessions(1))[0]
    assert first.dropped and not first.ended
    assert len(first.answers()) == 1  # the GPV answer; the SPV answer never came
    assert cpe.rpcs == ["GetParameterValues", "SetParameterValues"]
    # The change landed before the connection was dropped: the ACS must re-read.
    assert cpe.model.value("Device.Time.NTPServer1") == "dropped.example"
    # One retry, RetryCount 1; the events were acknowledged by the first InformResponse.
    [_, retry] = await acs.wait_sessions(2)
    assert retry.inform.retry_count == 1
    assert retry.events == []
    assert retry.ended
    await acs.wait_for(lambda: cpe.sessions == 1)
    assert cpe.last_session_error is None


async def test_acs_basic_auth_and_wrong_password() -> None:
    server = ScriptedAcs(auth="basic")
    await server.start()
    good = SimulatedCpe(
        CpeConfig(server.url, "B1", model="tr181", acs_username=ACS_USER, acs_password=ACS_PASSWORD)
    )
    bad = SimulatedCpe(
        CpeConfig(
            server.url,
            "B2",
            model="tr181",
            acs_username=ACS_USER,
            acs_password="wrong",
            retry_s=None,
        )
    )
    try:
        server.plans.append([GetRPCMethods(), GetRPCMethods()])
        await good.start()
        assert good.last_session_error is None and len(server.sessions) == 1
        # One challenge per session, then Basic on every request (Inform, empty POST, 2 answers).
        assert server.unauthorized == 1
        assert len(server.sessions[0].received) == 4
        await good.inform("2 PERIODIC")
        assert server.unauthorized == 2
        await bad.start()
        assert bad.last_session_error is not None and "401" in bad.last_session_error
        assert bad.sessions == 0 and len(server.sessions) == 2
    finally:
        await good.close()
        await bad.close()
        await server.close()


async def test_periodic_inform_and_latency(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe(periodic_inform_s=0.2)
    await cpe.start()
    assert cpe.model.value("Device.ManagementServer.PeriodicInformEnable") == "true"
    sessions = await acs.wait_sessions(3)
    assert [s.events for s in sessions[:3]] == [
        ["0 BOOTSTRAP", "1 BOOT"],
        ["2 PERIODIC"],
        ["2 PERIODIC"],
    ]
    await cpe.close()  # stops the timer (the fixture's second close is a no-op)
    # Latency: every HTTP request waits first (Inform, empty POST, one answer: 3 requests).
    slow = new_cpe(faults=CpeFaults(latency_s=0.15))
    acs.plans.append([GetRPCMethods()])
    started = time.monotonic()
    await slow.start()
    assert time.monotonic() - started >= 3 * 0.15
    assert slow.last_session_error is None


async def test_spv_of_periodic_settings_rearms_the_timer(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe()
    acs.plans.append(
        [
            SetParameterValues(
                [
                    ParameterValue(
                        "Device.ManagementServer.PeriodicInformEnable", "true", "xsd:boolean"
                    ),
                    ParameterValue(
                        "Device.ManagementServer.PeriodicInformInterval", "1", "xsd:unsignedInt"
                    ),
                ]
            )
        ]
    )
    await cpe.start()
    sessions = await acs.wait_sessions(2)
    assert sessions[1].events == ["2 PERIODIC"]


# ---- connection requests ----


async def test_connection_request_digest(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe()
    await cpe.start()
    assert len(acs.sessions) == 1
    # No credentials: a Digest challenge in the simulator's realm.
    async with httpx2.AsyncClient(timeout=10) as client:
        response = await client.get(cpe.connection_request_url)
        assert response.status_code == 401
        challenge = response.headers["www-authenticate"]
        assert challenge.startswith("Digest ") and 'realm="headless-ops-sim"' in challenge
        assert 'qop="auth"' in challenge
        wrong_path = cpe.connection_request_url.rsplit("/", 1)[0] + "/nope"
        assert (await client.get(wrong_path)).status_code == 404
    # Wrong password: 401 and no session.
    assert await connection_request(cpe, password="wrong") == 401
    assert await connection_request(cpe, username="other") == 401
    await cpe.inform("2 PERIODIC")
    assert [s.events for s in acs.sessions] == [["0 BOOTSTRAP", "1 BOOT"], ["2 PERIODIC"]]
    # Right credentials: 200, then a session with "6 CONNECTION REQUEST".
    assert await connection_request(cpe) == 200
    sessions = await acs.wait_sessions(3)
    assert sessions[2].events == ["6 CONNECTION REQUEST"]
    # The ACS rotates the credentials by SPV; the old ones stop working.
    acs.plans.append(
        [
            SetParameterValues(
                [
                    ParameterValue("Device.ManagementServer.ConnectionRequestUsername", "new-user"),
                    ParameterValue("Device.ManagementServer.ConnectionRequestPassword", "new-pw"),
                ]
            )
        ]
    )
    await cpe.inform("2 PERIODIC")
    assert await connection_request(cpe) == 401
    assert await connection_request(cpe, "new-user", "new-pw") == 200
    sessions = await acs.wait_sessions(5)
    assert sessions[4].events == ["6 CONNECTION REQUEST"]


async def test_connection_request_refused_and_no_auth(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe(faults=CpeFaults(refuse_connection_requests=True))
    await cpe.start()
    assert await connection_request(cpe) == 503
    cpe.config.faults.refuse_connection_requests = False
    assert await connection_request(cpe) == 200
    await acs.wait_sessions(2)
    # An empty CR password: no authentication asked.
    open_cpe = new_cpe(cr_username=None, cr_password=None)
    await open_cpe.start()
    async with httpx2.AsyncClient(timeout=10) as client:
        assert (await client.get(open_cpe.connection_request_url)).status_code == 200
    sessions = await acs.wait_sessions(4)
    assert sessions[3].events == ["6 CONNECTION REQUEST"]
    assert sessions[3].inform.device_id.serial_number == open_cpe.config.serial_number


async def test_connection_requests_coalesce_behind_a_running_session(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    cpe = new_cpe()
    await cpe.start()
    cpe.config.faults.latency_s = 0.3  # a slow session, long enough to send CRs during it
    acs.plans.append([GetRPCMethods()])
    running = asyncio.create_task(cpe.inform("2 PERIODIC"))
    await acs.wait_for(lambda: len(acs.sessions) == 2)
    assert [await connection_request(cpe) for _ in range(3)] == [200, 200, 200]
    await running
    cpe.config.faults.latency_s = 0
    sessions = await acs.wait_sessions(3)
    assert sessions[2].events == ["6 CONNECTION REQUEST"]
    await cpe.inform("2 PERIODIC")  # queued behind nothing: the CRs made one session only
    assert [s.events for s in acs.sessions[1:]] == [
        ["2 PERIODIC"],
        ["6 CONNECTION REQUEST"],
        ["2 PERIODIC"],
    ]


# ---- reboot, factory reset, transfers ----


async def test_reboot(acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]) -> None:
    cpe = new_cpe(reboot_s=1.0)
    acs.plans.append([Reboot("rb-1")])
    await cpe.start()
    [first] = acs.sessions
    assert isinstance(first.answers()[0].body, RebootResponse)
    assert cpe.rebooting
    assert await connection_request(cpe) == 503  # offline while rebooting
    [_, boot] = await acs.wait_sessions(2)
    assert boot.events == ["1 BOOT", "M Reboot rb-1"]
    assert cpe.boots == 1 and not cpe.rebooting
    assert (
        int(boot.params["Device.DeviceInfo.UpTime"])
        <= int(first.params["Device.DeviceInfo.UpTime"]) + 1
    )


async def test_factory_reset(acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]) -> None:
    cpe = new_cpe(software_version="3.0")
    acs.plans.append(
        [
            SetParameterValues([ParameterValue("Device.Time.NTPServer1", "changed.example")], "pk"),
            AddObject("Device.NAT.PortMapping."),
            FactoryReset(),
        ]
    )
    await cpe.start()
    [_, boot] = await acs.wait_sessions(2)
    assert boot.events == ["0 BOOTSTRAP", "1 BOOT"]
    assert cpe.model.value("Device.Time.NTPServer1") == "0.pool.ntp.org"
    assert not cpe.model.exists("Device.NAT.PortMapping.1.")
    assert boot.params["Device.ManagementServer.ParameterKey"] == ""
    # Identity, ACS and CR settings are back to the CPE's own; the firmware stays.
    assert boot.params["Device.ManagementServer.ConnectionRequestURL"] == cpe.connection_request_url
    assert cpe.software_version == "3.0"
    assert boot.inform.device_id.serial_number == cpe.config.serial_number
    assert await connection_request(cpe) == 200


async def test_firmware_download(acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]) -> None:
    image = b"VERSION=2.0.0\n" + os.urandom(200_000)
    acs.files["fw-2.0.0.bin"] = image
    cpe = new_cpe(software_version="1.0.0")
    acs.plans.append(
        [
            Download(
                "dl-1",
                "1 Firmware Upgrade Image",
                f"{acs.base}/files/fw-2.0.0.bin",
                FILE_USER,
                FILE_PASSWORD,
                file_size=len(image),
            )
        ]
    )
    await cpe.start()
    answer = acs.sessions[0].answers()[0].body
    assert isinstance(answer, DownloadResponse) and answer.status == 1
    [_, boot] = await acs.wait_sessions(2)
    assert boot.events == ["1 BOOT", "7 TRANSFER COMPLETE", "M Download dl-1"]
    assert boot.params["Device.DeviceInfo.SoftwareVersion"] == "2.0.0"
    [tc] = boot.bodies(TransferComplete)
    assert tc.command_key == "dl-1" and tc.fault_code == 0
    assert tc.start_time and tc.complete_time
    # TransferComplete comes before the empty POST.
    assert isinstance(boot.received[1].body, TransferComplete) and boot.received[2].body is None
    assert cpe.software_version == "2.0.0" and cpe.boots == 1
    # Basic auth on the file server: challenged, then authenticated.
    assert acs.file_auth[0] is None and acs.file_auth[1] is not None
    # The next session does not repeat the TransferComplete.
    await cpe.inform("2 PERIODIC")
    assert acs.sessions[2].bodies(TransferComplete) == []


@pytest.mark.parametrize(
    ("path", "password", "fault"),
    [("fw.bin", "wrong", 9012), ("missing.bin", FILE_PASSWORD, 9016)],
)
async def test_download_failures(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe], path: str, password: str, fault: int
) -> None:
    acs.files["fw.bin"] = b"VERSION=9\n"
    cpe = new_cpe(software_version="1.0.0")
    url = f"{acs.base}/files/{path}"
    acs.plans.append([Download("dl-x", "1 Firmware Upgrade Image", url, FILE_USER, password)])
    await cpe.start()
    [_, report] = await acs.wait_sessions(2)
    assert report.events == ["7 TRANSFER COMPLETE", "M Download dl-x"]  # no reboot
    [tc] = report.bodies(TransferComplete)
    assert tc.fault_code == fault and tc.fault_string
    assert cpe.software_version == "1.0.0" and cpe.boots == 0


async def test_download_fault_injection(
    acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]
) -> None:
    acs.files["fw.bin"] = b"VERSION=5.5\n"
    url = f"{acs.base}/files/fw.bin"
    faulty = new_cpe(faults=CpeFaults(download_fault=9010), software_version="1")
    acs.plans.append([Download("a", "1 Firmware Upgrade Image", url, FILE_USER, FILE_PASSWORD)])
    await faulty.start()
    [_, report] = await acs.wait_sessions(2)
    [tc] = report.bodies(TransferComplete)
    assert tc.fault_code == 9010 and faulty.software_version == "1"
    # A CPE that never sends TransferComplete: it still upgrades and reboots.
    silent = new_cpe(faults=CpeFaults(no_transfer_complete=True), software_version="1")
    acs.plans.append([Download("b", "1 Firmware Upgrade Image", url, FILE_USER, FILE_PASSWORD)])
    await silent.start()
    sessions = await acs.wait_sessions(4)
    boot = sessions[3]
    assert boot.inform.device_id.serial_number == silent.config.serial_number
    assert boot.events == ["1 BOOT"]
    assert boot.bodies(TransferComplete) == []
    assert boot.params["Device.DeviceInfo.SoftwareVersion"] == "5.5"


async def test_upload_configuration(acs: ScriptedAcs, new_cpe: Callable[..., SimulatedCpe]) -> None:
    cpe = new_cpe(serial_number="UP-1")
    acs.plans.append(
        [
            Upload(
                "up-1",
                "1 Vendor Configuration File",
                f"{acs.base}/upload/cfg.txt",
                FILE_USER,
                FILE_PASSWORD,
            ),
        ]
    )
    await cpe.start()
    answer = acs.sessions[0].answers()[0].body
    assert isinstance(answer, UploadResponse) and answer.status == 1
    [_, report] = await acs.wait_sessions(2)
    assert report.events == ["7 TRANSFER COMPLETE", "M Upload up-1"]
    [tc] = report.bodies(TransferComplete)
    assert tc.command_key == "up-1" and tc.fault_code == 0
    lines = acs.uploads["cfg.txt"].decode().splitlines()
    rows = {line.split("\t")[0]: line.split("\t") for line in lines}
    assert rows["Device.DeviceInfo.SerialNumber"] == [
        "Device.DeviceInfo.SerialNumber",
        "xsd:string",
        "UP-1",
    ]
    assert rows["Device.ManagementServer.PeriodicInformEnable"][1] == "xsd:boolean"
    assert len(lines) == len(cpe.model.parameter_values())


# ---- fleet and CLI ----


async def test_fleet_is_cheap_when_idle(acs: ScriptedAcs) -> None:
    baseline = len(asyncio.all_tasks())
    fleet = Fleet(
        acs.url,
        60,
        model="tr098",
        serial_prefix="FLT",
        start_concurrency=10,
        acs_username=ACS_USER,
        acs_password=ACS_PASSWORD,
        faults=CpeFaults(fault_rpcs={"Reboot": 9001}),
    )
    try:
        await fleet.start()
        assert all(c.last_session_error is None for c in fleet.cpes)
        serials = sorted(s.inform.device_id.serial_number for s in acs.sessions)
        assert serials == [f"FLT{i:06d}" for i in range(1, 61)]
        assert fleet.summary()["sessions"] == 60
        # Idle CPEs hold no task (the ACS's connection handlers end as the clients close).
        await acs.wait_for(lambda: len(asyncio.all_tasks()) <= baseline, within=WAIT_S)
        # Faults are per CPE copies.
        fleet.cpes[0].config.faults.fault_rpcs["Download"] = 9010
        assert "Download" not in fleet.cpes[1].config.faults.fault_rpcs
        # A connection request reaches one CPE of the fleet.
        assert await connection_request(fleet.cpes[7], "", "") == 200
        sessions = await acs.wait_sessions(61)
        assert sessions[60].inform.device_id.serial_number == "FLT000008"
    finally:
        await fleet.close()


async def test_cli_simulate_runs_until_sigterm(acs: ScriptedAcs) -> None:
    code = (
        "from headless_ops.simulator.cli import simulate; "
        f"simulate({acs.url!r}, 3, 'mixed', None, {ACS_USER!r}, {ACS_PASSWORD!r}, '127.0.0.1', 'CLI')"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(60):
            while not lines or "Ctrl-C" not in lines[-1]:
                line = await proc.stdout.readline()
                assert line, f"simulate exited early: {lines}"
                lines.append(line.decode().strip())
        assert len(acs.sessions) == 3
        proc.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    cpe_lines = [line for line in lines if line.startswith("CLI")]
    assert len(cpe_lines) == 3
    assert all(" ok" in line and "cr=http://127.0.0.1:" in line for line in cpe_lines)
    # One line per CPE as it starts (in the order the starts finish), with its device key.
    # "mixed": TR-098 (the Huawei file) and TR-181 gateways in turn.
    assert sorted(line.split()[:2] for line in cpe_lines) == [
        ["CLI000001", "202BC1-BM632w-CLI000001"],
        ["CLI000002", "001A2B-HO%2DSIM%2D181-CLI000002"],
        ["CLI000003", "202BC1-BM632w-CLI000003"],
    ]
    roots = {s.inform.device_id.serial_number: s.inform.parameters[0].name for s in acs.sessions}
    assert roots["CLI000002"].startswith("Device.")
    assert roots["CLI000003"].startswith("InternetGatewayDevice.")
    summary = out.decode().strip().splitlines()[-1]
    assert summary.startswith("stopped 3 CPEs: 3 sessions, 0 failed")
