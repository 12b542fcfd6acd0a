"""The ACS itself, on both engines: CPE authentication (Digest per device or shared, Basic
only over TLS), identity and (auto-)registration, the namespace a CPE speaks answered in
kind, and the path another ACS process takes (jobs handed over through the database)."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import Any

import httpx2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from headless_ops.auth.tokens import ensure_tenant
from headless_ops.cwmp import engine as engine_module
from headless_ops.cwmp import soap
from headless_ops.cwmp.messages import ParameterValue
from headless_ops.services.devices import DeviceService
from tests.conftest import Api
from tests.support.api_helpers import DEVICES
from tests.support.cwmp_env import acs_env
from tests.support.ssh_ops import run_op

IGD = "InternetGatewayDevice."


def _inform(serial: str, *, ns: str = soap.CWMP_1_0, versions: str | None = None) -> bytes:
    inform = soap.Inform(
        device_id=soap.DeviceId("Acme", "00AA11", "GW1", serial),
        events=[soap.EventStruct("1 BOOT")],
        parameters=[soap.ParameterValue(f"{IGD}DeviceInfo.SoftwareVersion", "1.2.3")],
    )
    return soap.serialize(inform, cwmp_ns=ns, id="inform-1", supported_versions=versions)


async def _gateway(env: Any, device_id: str, serial: str, username: str, password: str) -> None:
    """An inventory CWMP device registered ahead of its CPE, with per-device credentials."""
    r = await env.api.client.post(
        DEVICES,
        json={
            "id": device_id,
            "name": device_id.removeprefix("dev_").replace("_", "-"),
            "protocol": "cwmp",
            "connection": {
                "oui": "202BC1",
                "product_class": "BM632w",
                "serial_number": serial,
                "cpe_username": username,
                "cpe_password": password,
            },
        },
        headers=env.headers,
    )
    assert r.status_code == 201, r.text


async def test_per_device_digest_credentials(api: Api) -> None:
    async with acs_env(api) as env:
        await _gateway(env, "dev_gw_auth", "AUTH0001", "gw-auth", "per-device-secret")
        wrong = await env.cpe("AUTH0001", acs_username="gw-auth", acs_password="wrong")
        assert wrong.sessions == 0 and "401" in (wrong.last_session_error or ""), (
            wrong.last_session_error
        )
        await wrong.close()
        right = await env.cpe("AUTH0001", acs_username="gw-auth", acs_password="per-device-secret")
        assert right.sessions >= 1, right.last_session_error
        assert await env.device_id(right) == "dev_gw_auth"  # bound to the inventory device
        op = await run_op(
            api,
            env.headers,
            "dev_gw_auth",
            "get_parameters",
            {"names": [f"{IGD}DeviceInfo.SerialNumber"]},
            timeout=30,
        )
        assert op["status"] == "completed", op


async def test_changed_credentials_apply_at_once(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    async with acs_env(api) as env:
        await _gateway(env, "dev_gw_rot", "ROT0001", "gw", "first")

        async def sessions_with(password: str) -> tuple[int, str | None]:
            cpe = await env.cpe("ROT0001", acs_username="gw", acs_password=password)
            try:
                return cpe.sessions, cpe.last_session_error
            finally:
                await cpe.close()

        assert (await sessions_with("first"))[0] >= 1  # known (and cached) by the ACS now
        # Rotated through this process's API: the old password is refused at once, the new
        # one accepted, without waiting for the cache to expire.
        r = await api.client.patch(
            f"{DEVICES}dev_gw_rot/",
            json={"connection": {"cpe_password": "second"}},
            headers=env.headers,
        )
        assert r.status_code == 200, r.text
        sessions, error = await sessions_with("first")
        assert sessions == 0 and "401" in (error or ""), error
        assert (await sessions_with("second"))[0] >= 1
        # Rotated by another process (a device service this ACS does not listen to): the
        # new password fails against the cache, which is looked up again before refusing.
        monkeypatch.setattr(engine_module, "RECHECK_AFTER_FAILURE_S", 0.0)
        cpe = await env.cpe("ROT0001", acs_username="gw", acs_password="second")
        try:
            # A bootstrap gets connection-request credentials provisioned: a change of the
            # device in this process, which drops it from the cache. A periodic Inform
            # caches it again.
            await cpe.inform("2 PERIODIC")
            assert any(k.device_id == "dev_gw_rot" for k in env.engine.known.values())
            elsewhere = DeviceService(api.runtime.db, api.runtime.box)
            await elsewhere.update(
                await ensure_tenant(api.runtime.db, "acme"),
                "dev_gw_rot",
                DeviceService.parse_update({"connection": {"cpe_password": "third"}}),
            )
            cpe.model.set(
                [ParameterValue(f"{IGD}ManagementServer.Password", "third", "xsd:string")]
            )
            before = cpe.sessions
            await cpe.inform("2 PERIODIC")
            assert cpe.sessions == before + 1, cpe.last_session_error
        finally:
            await cpe.close()


async def test_credentials_changed_while_being_read_are_not_cached_stale(api: Api) -> None:
    async with acs_env(api) as env:
        await _gateway(env, "dev_gw_race", "RACE0001", "gw", "old")
        cpe = await env.cpe("RACE0001", acs_username="gw", acs_password="old")
        await cpe.inform("2 PERIODIC")  # bootstrapped and provisioned: a routine Inform now
        env.engine.known.clear()  # the next Inform reads the device again
        devices_service = env.engine.resources.devices
        get = devices_service.get
        read, go_on = asyncio.Event(), asyncio.Event()

        async def slow_get(tenant_id: str, device_id: str) -> Any:
            record = await get(tenant_id, device_id)  # the old credentials
            if device_id == "dev_gw_race" and not read.is_set():
                read.set()
                await go_on.wait()
            return record

        devices_service.get = slow_get  # type: ignore[method-assign]
        try:
            # An Inform reads the device; the password changes meanwhile.
            informing = asyncio.create_task(cpe.inform("2 PERIODIC"))
            await asyncio.wait_for(read.wait(), 10)
            r = await api.client.patch(
                f"{DEVICES}dev_gw_race/",
                json={"connection": {"cpe_password": "new"}},
                headers=env.headers,
            )
            assert r.status_code == 200, r.text
            go_on.set()
            await informing
        finally:
            devices_service.get = get  # type: ignore[method-assign]
        # What that Inform read predates the change: it was not kept.
        sessions = cpe.sessions
        await cpe.inform("2 PERIODIC")
        assert cpe.sessions == sessions and "401" in (cpe.last_session_error or "")
        cpe.model.set([ParameterValue(f"{IGD}ManagementServer.Password", "new", "xsd:string")])
        await cpe.inform("2 PERIODIC")
        assert cpe.sessions == sessions + 1, cpe.last_session_error


async def test_shared_credentials_and_a_cpe_without_any(api: Api) -> None:
    async with acs_env(api, cwmp_username="fleet", cwmp_password="shared-secret") as env:
        none = await env.cpe("SHR0001")
        assert none.sessions == 0 and "401" in (none.last_session_error or "")
        ok = await env.cpe("SHR0002", acs_username="fleet", acs_password="shared-secret")
        assert ok.sessions >= 1, ok.last_session_error
        # Plain HTTP offers Digest only: Basic credentials are refused even when right.
        async with httpx2.AsyncClient(timeout=10) as client:
            r = await client.post(
                env.acs_url,
                content=_inform("SHR0003"),
                auth=httpx2.BasicAuth("fleet", "shared-secret"),
            )
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Digest")
        # Only the CPE that proved it belongs to the fleet was registered: a device is never
        # created for an Inform without the shared credentials.
        listed = (await api.client.get(DEVICES, headers=env.headers)).json()["results"]
        assert [d["connection"]["serial_number"] for d in listed] == ["SHR0002"]


async def test_unknown_cpes_are_refused_when_auto_registration_is_off(api: Api) -> None:
    async with acs_env(api, cwmp_auto_register=False) as env:
        stranger = await env.cpe("UNK0001")
        assert stranger.sessions == 0 and "403" in (stranger.last_session_error or "")
        r = await api.client.get(DEVICES, headers=env.headers)
        assert r.json()["count"] == 0
        # One the inventory knows is accepted (and bound to it).
        r = await api.client.post(
            DEVICES,
            json={
                "id": "dev_known",
                "name": "known",
                "protocol": "cwmp",
                "connection": {
                    "oui": "202BC1",
                    "product_class": "BM632w",
                    "serial_number": "KNW0001",
                },
            },
            headers=env.headers,
        )
        assert r.status_code == 201
        known = await env.cpe("KNW0001")
        assert known.sessions >= 1
        assert await env.device_id(known) == "dev_known"


async def test_auto_registration_is_bounded_per_minute(api: Api) -> None:
    # Without shared credentials anyone reaching the ACS can register devices: at most
    # cwmp_register_per_minute of them, the rest are asked to retry later (503, Retry-After)
    # and are not registered. CPEs already known are never held back.
    async with acs_env(api, cwmp_register_per_minute=2) as env:
        async with httpx2.AsyncClient(timeout=10) as client:
            answers = [
                await client.post(env.acs_url, content=_inform(f"RATE{i:04d}")) for i in range(4)
            ]
            assert [r.status_code for r in answers] == [200, 200, 503, 503]
            # Two a minute: the next one in about 30 s.
            assert 25 <= int(answers[2].headers["retry-after"]) <= 30
            assert b"retry later" in answers[2].content
            again = await client.post(env.acs_url, content=_inform("RATE0000"))
            assert again.status_code == 200
        listed = (await api.client.get(DEVICES, headers=env.headers)).json()["results"]
        assert sorted(d["connection"]["serial_number"] for d in listed) == ["RATE0000", "RATE0001"]


async def test_auto_registration_fills_the_inventory(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("REG0001", software_version="9.9")
        device_id = await env.device_id(cpe)
        body = (await api.client.get(f"{DEVICES}{device_id}/", headers=env.headers)).json()
        assert body["protocol"] == "cwmp" and body["status"] == "online"
        assert body["connection"]["serial_number"] == "REG0001"
        assert body["firmware_version"] == "9.9" and body["last_seen_at"]
        reported = body["reported"]
        assert reported["software_version"] == "9.9"
        assert reported["data_model"] == IGD and reported["hardware_version"]
        assert isinstance(reported["uptime_s"], int)
        assert reported["connection_request_url"] == cpe.connection_request_url
        assert "0 BOOTSTRAP" in reported["last_events"]
        listed = (await api.client.get(DEVICES, headers=env.headers)).json()["results"]
        assert [d["reported"]["software_version"] for d in listed] == ["9.9"]
        assert body["labels"] == {"registered_by": "acs"}
        # The ACS gave it connection-request credentials of its own, kept sealed.
        username = body["connection"]["connection_request_username"]
        assert username == "202BC1-BM632w-REG0001"
        assert "connection_request_password" not in body["connection"]
        assert cpe.model.value(f"{IGD}ManagementServer.ConnectionRequestUsername") == username
        password = cpe.model.value(f"{IGD}ManagementServer.ConnectionRequestPassword")
        assert password and len(password) >= 20
        # …which a connection request now needs (Digest): without them the CPE says 401.
        url = cpe.connection_request_url
        async with httpx2.AsyncClient(timeout=5) as client:
            assert (await client.get(url)).status_code == 401
            assert (
                await client.get(url, auth=httpx2.DigestAuth(username, password))
            ).status_code in (200, 204)


async def test_the_namespace_and_version_of_the_cpe_are_answered_in_kind(api: Api) -> None:
    # This hand-driven CPE does not take the ACS's provisioning of its credentials.
    async with (
        acs_env(api, cwmp_provision_connection_request=False) as env,
        httpx2.AsyncClient(timeout=10) as client,
    ):
        r = await client.post(
            env.acs_url, content=_inform("NSP0001", ns=soap.CWMP_1_2, versions="1.0,1.2,1.4")
        )
        assert r.status_code == 200, r.text
        reply = soap.parse(r.content)
        assert reply.cwmp_ns == soap.CWMP_1_2 and reply.id == "inform-1"
        assert isinstance(reply.body, soap.InformResponse) and reply.body.max_envelopes == 1
        assert reply.use_cwmp_version == "1.4"
        assert "session=" in r.headers["set-cookie"]
        # The empty POST: nothing to do, 204; the session is over.
        r = await client.post(env.acs_url, content=b"")
        assert r.status_code == 204
        r = await client.post(env.acs_url, content=_inform("NSP0002", ns=soap.CWMP_1_0))
        assert soap.parse(r.content).cwmp_ns == soap.CWMP_1_0
        # A method the ACS does not implement: fault 8000, and the session goes on.
        unknown = soap.serialize(
            soap.RequestDownload(file_type="X 1"), cwmp_ns=soap.CWMP_1_0, id="7"
        )
        r = await client.post(
            env.acs_url, content=unknown.replace(b"RequestDownload", b"X_ACME_Frob")
        )
        fault = soap.parse(r.content).body
        assert isinstance(fault, soap.CwmpFault) and fault.code == 8000
        r = await client.post(env.acs_url, content=b"")
        assert r.status_code == 204


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "acs.crt", tmp / "acs.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


async def test_https_with_basic_auth(api: Api, tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    async with acs_env(
        api, cwmp_tls_cert=cert, cwmp_tls_key=key, cwmp_username="fleet", cwmp_password="tls-secret"
    ) as env:
        url = f"https://127.0.0.1:{env.server.port}/"
        context = ssl.create_default_context(cafile=str(cert))
        async with httpx2.AsyncClient(timeout=10, verify=context) as client:
            r = await client.post(url, content=_inform("TLS0001"))
            assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Basic")
            r = await client.post(
                url, content=_inform("TLS0001"), auth=httpx2.BasicAuth("fleet", "tls-secret")
            )
            assert r.status_code == 200, r.text
            assert isinstance(soap.parse(r.content).body, soap.InformResponse)


async def test_work_handed_over_through_the_database_as_between_processes(api: Api) -> None:
    # The helper without the engine: like a worker in one process and the ACS in another,
    # the job goes through the database and the CPE is reached by a connection request.
    async with acs_env(api) as env:
        env.helper.engine = None
        cpe = await env.cpe("XPR0001")
        device_id = await env.device_id(cpe)
        op = await run_op(api, env.headers, device_id, "reboot", timeout=30)
        assert op["status"] == "completed", op
        assert cpe.boots == 1
        op = await run_op(
            api,
            env.headers,
            device_id,
            "get_parameters",
            {"names": [f"{IGD}DeviceInfo.UpTime"]},
            timeout=30,
        )
        assert op["status"] == "completed", op


async def test_periodic_refresh_asks_silent_cpes_and_marks_the_gone_offline(api: Api) -> None:
    from headless_ops.cwmp.acs import refresh_stale

    async with acs_env(api, cwmp_status_refresh_s=0.5) as env:
        alive = await env.cpe("PRF0001")
        gone = await env.cpe("PRF0002")
        alive_id, gone_id = await env.device_id(alive), await env.device_id(gone)
        await gone.close()
        await asyncio.sleep(0.6)  # both are now "silent" for longer than the refresh interval
        sessions = alive.sessions
        assert await refresh_stale(api.runtime) == 2
        assert alive.sessions > sessions  # it was asked to connect, and did
        body = (await api.client.get(f"{DEVICES}{alive_id}/", headers=env.headers)).json()
        assert body["status"] == "online", body
        body = (await api.client.get(f"{DEVICES}{gone_id}/", headers=env.headers)).json()
        assert body["status"] == "offline", body
        assert "connection request" in body["status_detail"], body


async def test_downloads_need_their_one_time_credentials_and_end_with_the_job(api: Api) -> None:
    from headless_ops.cwmp.auth import ha1
    from headless_ops.cwmp.store import JobState
    from headless_ops.timeutil import utcnow

    async with acs_env(api, scheduler=False) as env:
        r = await api.client.post(
            "/api/v1/firmware/",
            files={"file": ("fw-7.bin", b"VERSION=7\nimage bytes\n")},
            data={"version": "7.0"},
            headers=env.headers,
        )
        image = r.json()
        cpe = await env.cpe("DLC0001")
        device_id = await env.device_id(cpe)
        row = await env.engine.store.device("202BC1-BM632w-DLC0001")
        assert row is not None
        now = utcnow()
        await env.engine.store.put_job(
            {
                "operation_id": "op_download_test",
                "attempt": 1,
                "tenant_id": row.tenant_id,
                "device_id": device_id,
                "device_key": row.device_key,
                "operation_type": "firmware_update",
                "parameters": {"firmware_version": "7.0"},
                "priority": 0,
                "state": JobState.WAITING,
                "transfer_token": "tok-abc",
                "transfer_username": "dl-user",
                "transfer_ha1": ha1("dl-user", "dl-pass"),
                "progress": {"image_id": image["id"]},
                "created_at": now,
                "updated_at": now,
            }
        )
        url = f"http://127.0.0.1:{env.server.port}/firmware/tok-abc/fw-7.bin"
        async with httpx2.AsyncClient(timeout=10) as client:
            assert (await client.get(url)).status_code == 401
            assert (
                await client.get(url, auth=httpx2.DigestAuth("dl-user", "wrong"))
            ).status_code == 401
            r = await client.get(url, auth=httpx2.DigestAuth("dl-user", "dl-pass"))
            assert r.status_code == 200 and r.content == b"VERSION=7\nimage bytes\n"
            r = await client.get(url, auth=httpx2.BasicAuth("dl-user", "dl-pass"))
            assert r.status_code == 200
            other = f"http://127.0.0.1:{env.server.port}/firmware/not-a-token/fw-7.bin"
            assert (
                await client.get(other, auth=httpx2.DigestAuth("dl-user", "dl-pass"))
            ).status_code == 404
            await env.engine.store.transition(
                "op_download_test",
                1,
                from_states=(JobState.WAITING,),
                now=utcnow(),
                state=JobState.DONE,
            )
            r = await client.get(url, auth=httpx2.DigestAuth("dl-user", "dl-pass"))
            assert r.status_code == 404  # the job is over: so is its download


async def test_the_cache_of_cpes_is_pruned(api: Api) -> None:
    from headless_ops.cwmp import engine as engine_module

    async with acs_env(api, scheduler=False) as env:
        cpe = await env.cpe("PRN0001")
        key = "202BC1-BM632w-PRN0001"
        # (The bootstrap's provisioning changed the device, which dropped it from the cache.)
        await cpe.inform("2 PERIODIC")
        assert key in env.engine.known
        assert env.engine.prune_known() == 0  # fresh: kept
        env.engine.known[key].fetched -= engine_module.KNOWN_TTL_S + 1
        assert env.engine.prune_known() == 1 and key not in env.engine.known
        await cpe.inform("2 PERIODIC")  # looked up again, works as before
        assert key in env.engine.known and cpe.last_session_error is None
