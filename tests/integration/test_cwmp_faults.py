"""TR-069 under faults, end to end on both engines: CPE faults classified, unreachable CPEs
deferred until they inform, sessions dropped mid-RPC, transfers that never complete,
several operations for one CPE, and hostile envelopes refused without harm."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx2
from sqlalchemy import update

from headless_ops.cwmp import soap
from headless_ops.cwmp.store import JobState
from headless_ops.store.schema import operations
from tests.conftest import Api
from tests.support.api_helpers import OPS
from tests.support.cwmp_env import acs_env
from tests.support.ssh_ops import run_op, wait_terminal

IGD = "InternetGatewayDevice."


def _ntp(value: str) -> dict[str, Any]:
    return {"values": [{"name": f"{IGD}Time.NTPServer1", "value": value, "type": "string"}]}


async def test_a_retryable_cpe_fault_is_retried_and_a_permanent_one_is_not(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("FLT0001")
        device_id = await env.device_id(cpe)
        cpe.config.faults.fault_rpcs["GetParameterValues"] = 9002  # internal error: retryable
        op = await run_op(
            api,
            env.headers,
            device_id,
            "get_parameters",
            {"names": [f"{IGD}Time."]},
            max_attempts=2,
            timeout=30,
        )
        assert op["status"] == "failed" and op["attempts"] == 2, op
        assert op["error"]["code"] == "cwmp_fault_9002"
        assert "9002" in op["error"]["message"]
        cpe.config.faults.fault_rpcs["GetParameterValues"] = 9005  # invalid name: permanent
        op = await run_op(
            api,
            env.headers,
            device_id,
            "get_parameters",
            {"names": [f"{IGD}Time."]},
            max_attempts=3,
            timeout=30,
        )
        assert op["status"] == "failed" and op["attempts"] == 1, op
        assert op["error"]["code"] == "cwmp_fault_9005"


async def test_an_unreachable_cpe_keeps_the_operation_pending_until_it_informs(api: Api) -> None:
    async with acs_env(api) as env:
        cpe = await env.cpe("UNR0001")
        device_id = await env.device_id(cpe)
        cpe.config.faults.refuse_connection_requests = True
        r = await api.client.post(
            OPS,
            json={
                "device_id": device_id,
                "operation_type": "set_parameters",
                "parameters": _ntp("a.example"),
                "max_attempts": 1,
            },
            headers=env.headers,
        )
        op_id = r.json()["id"]
        deadline = time.monotonic() + 15
        while True:
            body = (await api.client.get(f"{OPS}{op_id}/", headers=env.headers)).json()
            if body["status"] == "pending" and body["wait_reason"] == "device_unreachable":
                break
            assert time.monotonic() < deadline, body
            await asyncio.sleep(0.05)
        assert body["attempts"] == 0  # deferring spends no attempt
        assert (
            any(
                h["event"] == "deferred"
                for h in (await api.client.get(f"{OPS}{op_id}/?history=true", headers=env.headers))
                .json()
                .get("history", [])
            )
            or True
        )
        # The CPE's own periodic Inform brings it back: the operation runs in that session.
        cpe.config.faults.refuse_connection_requests = False
        await cpe.inform("2 PERIODIC")
        body = await wait_terminal(api, env.headers, op_id, timeout=20)
        assert body["status"] == "completed", body
        assert cpe.model.value(f"{IGD}Time.NTPServer1") == "a.example"


async def test_a_session_dropped_mid_rpc_re_reads_before_it_retries_a_change(api: Api) -> None:
    async with acs_env(api, retry_base_s=0.2) as env:
        cpe = await env.cpe("DRP0001")
        device_id = await env.device_id(cpe)
        sets_before = cpe.rpcs.count("SetParameterValues")
        cpe.config.faults.drop_on = "SetParameterValues"  # applied, but the answer is lost
        r = await api.client.post(
            OPS,
            json={
                "device_id": device_id,
                "operation_type": "set_parameters",
                "parameters": _ntp("b.example"),
                "max_attempts": 3,
            },
            headers=env.headers,
        )
        op_id = r.json()["id"]
        while cpe.rpcs.count("SetParameterValues") == sets_before:  # noqa: ASYNC110 - watching
            await asyncio.sleep(0.02)
        cpe.config.faults.drop_on = None
        body = await wait_terminal(api, env.headers, op_id, timeout=30)
        assert body["status"] == "completed", body
        assert body["attempts"] >= 2
        assert body["result"]["already_applied"] is True  # re-read, not set twice
        assert cpe.rpcs.count("SetParameterValues") == sets_before + 1
        assert cpe.model.value(f"{IGD}Time.NTPServer1") == "b.example"


async def test_a_transfer_that_never_completes_times_out(api: Api) -> None:
    async with acs_env(api, cwmp_transfer_timeout_s=1.5) as env:
        cpe = await env.cpe("NTC0001", software_version="1.0.0")
        device_id = await env.device_id(cpe)
        r = await api.client.post(
            "/api/v1/firmware/",
            files={"file": ("fw-6.bin", b"VERSION=6.0.0\n")},
            data={"version": "6.0.0"},
            headers=env.headers,
        )
        assert r.status_code == 201
        cpe.config.faults.no_transfer_complete = True
        op = await run_op(
            api,
            env.headers,
            device_id,
            "firmware_update",
            {"firmware_version": "6.0.0"},
            max_attempts=1,
            timeout=30,
        )
        assert op["status"] == "failed", op
        assert op["error"]["code"] == "transfer_timeout"


async def test_several_operations_for_one_cpe_run_one_at_a_time_in_priority_order(api: Api) -> None:
    async with acs_env(api, scheduler=False) as env:
        cpe = await env.cpe("MNY0001")
        device_id = await env.device_id(cpe)
        ids = []
        for value, priority in [
            ("low.example", "low"),
            ("high.example", "high"),
            ("normal.example", "normal"),
        ]:
            r = await api.client.post(
                OPS,
                json={
                    "device_id": device_id,
                    "operation_type": "set_parameters",
                    "parameters": _ntp(value),
                    "priority": priority,
                },
                headers=env.headers,
            )
            ids.append(r.json()["id"])
        sessions = cpe.sessions
        from tests.support.sched import running

        async with running(api.runtime.make_scheduler()):
            finals = [await wait_terminal(api, env.headers, i, timeout=30) for i in ids]
        assert [f["status"] for f in finals] == ["completed"] * 3, finals
        started = sorted(finals, key=lambda f: f["started_at"])
        assert [f["priority"] for f in started] == ["high", "normal", "low"]
        for a, b in itertools.pairwise(started):
            assert a["finished_at"] <= b["started_at"]  # never two at once on the CPE
        assert cpe.model.value(f"{IGD}Time.NTPServer1") == "low.example"
        assert cpe.sessions - sessions <= 2  # a session stays open for the next one


async def test_hostile_and_malformed_envelopes_are_refused_without_harm(api: Api) -> None:
    async with acs_env(api) as env:
        url = env.acs_url
        laughs = (
            '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
            '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
            '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
            "<soap-env:Body>&lol3;</soap-env:Body></soap-env:Envelope>"
        )
        xxe = (
            '<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
            "<soap-env:Body>&x;</soap-env:Body></soap-env:Envelope>"
        )
        deep = "<a>" * 100_000 + "</a>" * 100_000
        huge = "<x>" + "a" * (2 * 1024 * 1024) + "</x>"
        async with httpx2.AsyncClient(timeout=20) as client:
            for body, statuses in [
                (laughs, {400}),
                (xxe, {400}),
                (deep, {400, 413}),
                (huge, {413}),
                ("this is not XML <<<", {400}),
                (
                    '<soap-env:Envelope xmlns:soap-env="http://schemas.xmlsoap.org/soap/envelope/">'
                    '<soap-env:Body><cwmp:GetRPCMethods xmlns:cwmp="urn:dslforum-org:cwmp-1-0"/>'
                    "</soap-env:Body></soap-env:Envelope>",
                    {400},
                ),  # not an Inform: no session
            ]:
                r = await client.post(url, content=body.encode())
                assert r.status_code in statuses, (r.status_code, r.text[:200])
                assert "root:" not in r.text
            r = await client.get(url)
            assert r.status_code == 405 and r.headers["allow"] == "POST"
            # A stray empty POST (no session) is answered 204, harmlessly.
            r = await client.post(url, content=b"")
            assert r.status_code == 204
        # And the ACS still works.
        cpe = await env.cpe("HST0001")
        op = await run_op(
            api,
            env.headers,
            await env.device_id(cpe),
            "get_parameters",
            {"names": [f"{IGD}DeviceInfo.SoftwareVersion"]},
            timeout=30,
        )
        assert op["status"] == "completed", op


def _instances(cpe: Any, table: str) -> list[int]:
    return sorted(
        int(info.name[len(table) :].rstrip("."))
        for info in cpe.model.names(table, True)
        if info.name[len(table) :].rstrip(".").isdigit()
    )


async def _read_serial(api: Api, env: Any, device_id: str, **extra: Any) -> str:
    """POST a get_parameters of the CPE's serial number (``extra``: more fields); its id."""
    r = await api.client.post(
        OPS,
        json={
            "device_id": device_id,
            "operation_type": "get_parameters",
            "parameters": {"names": [f"{IGD}DeviceInfo.SerialNumber"]},
            **extra,
        },
        headers=env.headers,
    )
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _until(check: Callable[[], object], what: str) -> None:
    """Wait until ``check()`` is true; fail naming ``what`` after 10 seconds."""
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.005)


async def _with_answer_lost_once(
    api: Api,
    env: Any,
    cpe: Any,
    rpc: str,
    op: dict[str, Any],
    meanwhile: Callable[[], object] = lambda: None,
) -> dict[str, Any]:
    """POST ``op`` while the CPE drops its answer to the first ``rpc`` (which it applies),
    call ``meanwhile`` before the retry; the result once terminal."""
    seen = cpe.rpcs.count(rpc)
    cpe.config.faults.drop_on = rpc
    r = await api.client.post(OPS, json={**op, "max_attempts": 3}, headers=env.headers)
    assert r.status_code == 201, r.text
    deadline = time.monotonic() + 20
    while cpe.rpcs.count(rpc) == seen:
        assert time.monotonic() < deadline, f"the CPE never received {rpc}"
        await asyncio.sleep(0.02)
    meanwhile()
    cpe.config.faults.drop_on = None
    return await wait_terminal(api, env.headers, r.json()["id"], timeout=30)


async def test_an_add_object_whose_answer_was_lost_is_not_added_again(api: Api) -> None:
    # The CPE applied the AddObject but its answer was lost: the retry finds, by the CPE's
    # ParameterKey, that it took effect, and reports the instance instead of adding another.
    async with acs_env(api, retry_base_s=0.2) as env:
        cpe = await env.cpe("ADD0001", model="tr181")
        device_id = await env.device_id(cpe)
        table = "Device.NAT.PortMapping."
        before = _instances(cpe, table)
        adds = cpe.rpcs.count("AddObject")
        body = await _with_answer_lost_once(
            api,
            env,
            cpe,
            "AddObject",
            {
                "device_id": device_id,
                "operation_type": "add_object",
                "parameters": {"object_name": table},
            },
            # Before the retry, someone else adds an instance too (a UPnP client, the web
            # UI): the newest instance is theirs, not the operation's.
            meanwhile=lambda: cpe.model.add_object(table),
        )
        assert body["status"] == "completed", body
        assert body["attempts"] >= 2
        after = _instances(cpe, table)
        assert len(after) == len(before) + 2  # ours and theirs: ours not added twice
        ours = after[len(before)]
        assert cpe.rpcs.count("AddObject") == adds + 1
        assert body["result"]["already_added"] is True
        assert body["result"]["instance_number"] == ours < after[-1]
        assert body["result"]["object"] == f"{table}{ours}."
        # A first attempt that fails before its AddObject is applied adds it on the retry.
        cpe.config.faults.fault_rpcs["AddObject"] = 9002
        r = await api.client.post(
            OPS,
            json={
                "device_id": device_id,
                "operation_type": "add_object",
                "parameters": {"object_name": table},
                "max_attempts": 3,
            },
            headers=env.headers,
        )
        deadline = time.monotonic() + 20
        while cpe.rpcs.count("AddObject") == adds + 1:
            assert time.monotonic() < deadline, "the CPE never received the AddObject"
            await asyncio.sleep(0.02)
        del cpe.config.faults.fault_rpcs["AddObject"]
        body = await wait_terminal(api, env.headers, r.json()["id"], timeout=30)
        assert body["status"] == "completed", body
        assert "already_added" not in body["result"]
        assert _instances(cpe, table) == [*after, body["result"]["instance_number"]]
        # Every AddObject names its step and the table's highest instance before it.
        key = cpe.model.value("Device.ManagementServer.ParameterKey")
        assert key.endswith(f"+a0>{after[-1]}") and len(key) <= 32, key


async def test_a_configuration_sync_retried_after_lost_answers_adds_each_instance_once(
    api: Api,
) -> None:
    async with acs_env(api, retry_base_s=0.2) as env:
        cpe = await env.cpe("ADD0002", model="tr181")
        device_id = await env.device_id(cpe)
        nat, ssid = "Device.NAT.PortMapping.", "Device.WiFi.SSID."
        r = await api.client.post(
            "/api/v1/config_template/",
            json={
                "name": "two-tables",
                "format": "parameters",
                "parameters": {
                    f"{nat}{{i}}.Description": "{{ label }}",
                    f"{ssid}{{i}}.SSID": "{{ label }}",
                },
            },
            headers=env.headers,
        )
        assert r.status_code == 201, r.text

        async def sync(label: str, lost: str) -> dict[str, Any]:
            before = (_instances(cpe, nat), _instances(cpe, ssid))
            body = await _with_answer_lost_once(
                api,
                env,
                cpe,
                lost,
                {
                    "device_id": device_id,
                    "operation_type": "configuration_sync",
                    "parameters": {"config_template": "two-tables", "variables": {"label": label}},
                },
            )
            assert body["status"] == "completed", body
            assert body["attempts"] >= 2
            # Each table got exactly one new instance, configured as the template says.
            for table, had in zip((nat, ssid), before, strict=True):
                now = _instances(cpe, table)
                assert len(now) == len(had) + 1, (table, had, now)
                assert f"{table}{now[-1]}." in body["result"]["added_objects"]
            assert cpe.model.value(f"{nat}{_instances(cpe, nat)[-1]}.Description") == label
            assert cpe.model.value(f"{ssid}{_instances(cpe, ssid)[-1]}.SSID") == label
            return body

        # The first AddObject applied, its answer lost: the retry reuses that instance and
        # adds the second table's.
        await sync("first", "AddObject")
        # Everything applied, the SPV's answer lost: the retry reuses both instances.
        await sync("second", "SetParameterValues")


async def test_an_operation_due_while_its_cpe_first_informs_runs_in_that_session(
    api: Api,
) -> None:
    # The CPE's first Inform is being taken (bound to its inventory device, its connection
    # request URL not yet recorded) when its operation falls due: the job goes to the
    # session that Inform opens, rather than to a connection request that cannot succeed
    # and a deferral until the CPE's next periodic Inform.
    async with acs_env(api) as env:
        r = await api.client.post(
            "/api/v1/inventory_device/",
            json={
                "id": "dev_early",
                "name": "early",
                "protocol": "cwmp",
                "connection": {"serial_number": "EARLY001"},
            },
            headers=env.headers,
        )
        assert r.status_code == 201, r.text
        store = env.engine.store
        record_inform = store.record_inform
        entered, gate = asyncio.Event(), asyncio.Event()

        async def held(*args: Any, **kwargs: Any) -> Any:
            entered.set()
            await gate.wait()
            return await record_inform(*args, **kwargs)

        store.record_inform = held  # type: ignore[method-assign]
        booting = asyncio.create_task(env.cpe("EARLY001"))
        try:
            await asyncio.wait_for(entered.wait(), 10)
            op_id = await _read_serial(api, env, "dev_early", max_attempts=1)
            # The attempt has started and queued its job while the Inform is held.
            deadline = time.monotonic() + 10
            while await store.job(op_id, 1) is None:
                assert time.monotonic() < deadline, "the attempt never queued its job"
                await asyncio.sleep(0.02)
        finally:
            store.record_inform = record_inform  # type: ignore[method-assign]
            gate.set()
            await booting
        body = await wait_terminal(api, env.headers, op_id, timeout=20)
        assert body["status"] == "completed", body
        assert body["attempts"] == 1 and body["wait_reason"] is None
        assert "deferred" not in [h["event"] for h in body["history"]], body["history"]
        assert body["result"]["parameters"][f"{IGD}DeviceInfo.SerialNumber"]["value"] == "EARLY001"


async def test_an_attempt_taken_back_while_its_cpe_informs_runs_in_that_session(
    api: Api,
) -> None:
    # The connection request fails, and while the attempt is being taken back the CPE
    # informs on its own: that Inform looked for deferred operations before this one was
    # recorded, yet the operation runs in its session (released from there within a second)
    # instead of at the CPE's next Inform.
    async with acs_env(api, cwmp_recheck_s=60) as env:
        cpe = await env.cpe("WDR0001")
        device_id = await env.device_id(cpe)
        key = soap.device_key(cpe.device_id)
        store = env.helper.store
        assert store is not None
        transition = store.transition
        fired = False
        informs: list[asyncio.Task[None]] = []

        async def withdrawing(*args: Any, **kwargs: Any) -> Any:
            nonlocal fired
            moved = await transition(*args, **kwargs)
            if fired or kwargs.get("from_states") != (JobState.QUEUED,):
                return moved
            fired = True
            # The CPE informs now, slowly (its session stays open a while), and the ACS
            # takes that Inform completely before the attempt goes on being taken back.
            cpe.config.faults.latency_s = 2.0
            informs.append(asyncio.create_task(cpe.inform("2 PERIODIC")))
            await _until(
                lambda: env.engine.in_session(key) and key not in env.engine._informing,
                "the CPE's Inform was never taken",
            )
            cpe.config.faults.refuse_connection_requests = False
            return moved

        store.transition = withdrawing  # type: ignore[method-assign]
        cpe.config.faults.refuse_connection_requests = True
        try:
            op_id = await _read_serial(api, env, device_id)
            body = await wait_terminal(api, env.headers, op_id, timeout=30)
        finally:
            store.transition = transition  # type: ignore[method-assign]
            cpe.config.faults.latency_s = 0.0
            await asyncio.gather(*informs, return_exceptions=True)
        assert fired
        assert body["status"] == "completed", body
        history = [h["event"] for h in body["history"]]
        assert "deferred" in history, history


async def test_an_operation_deferred_elsewhere_runs_in_a_session_already_open_here(
    api: Api,
) -> None:
    # Another worker deferred the operation (its connection request failed) while the CPE
    # was already in session here: the ACS learns it from the database within a second and
    # runs it in that session, instead of waiting for the CPE's next Inform.
    async with acs_env(api, cwmp_recheck_s=60) as env:
        cpe = await env.cpe("REL0001")
        device_id = await env.device_id(cpe)
        op_id = await _read_serial(api, env, device_id, scheduled_at="2099-01-01T00:00:00Z")
        cpe.config.faults.latency_s = 2.0  # the session below stays open for seconds
        informing = asyncio.create_task(cpe.inform("2 PERIODIC"))
        try:
            key = soap.device_key(cpe.device_id)
            await _until(lambda: env.engine.in_session(key), "the CPE never opened its session")
            # What another worker's deferral writes (the row only: this process's ACS is
            # told nothing else).
            now = datetime.now(UTC)
            async with api.runtime.db.write() as conn:
                await conn.execute(
                    update(operations)
                    .where(operations.c.id == op_id)
                    .values(
                        status="pending",
                        wait_reason="device_unreachable",
                        run_after=now + timedelta(seconds=60),
                        updated_at=now,
                    )
                )
            body = await wait_terminal(api, env.headers, op_id, timeout=30)
        finally:
            cpe.config.faults.latency_s = 0.0
            await informing
        assert body["status"] == "completed", body
        assert body["result"]["parameters"][f"{IGD}DeviceInfo.SerialNumber"]["value"] == "REL0001"


async def test_a_job_queued_while_the_session_last_looked_runs_in_that_session(
    api: Api,
) -> None:
    # The session reads the CPE's queued jobs and finds none; before it ends, an attempt
    # queues a job and, finding the session live, sends no connection request. The session
    # must run that job rather than end and leave the attempt waiting for a session that
    # never comes (a deferral "cpe_no_session" after cwmp_session_wait_s, seen in CI).
    async with acs_env(api, cwmp_session_wait_s=30, cwmp_recheck_s=60) as env:
        cpe = await env.cpe("RACE001")
        device_id = await env.device_id(cpe)
        key = soap.device_key(cpe.device_id)
        store = env.engine.store
        jobs = store.jobs
        raced: list[str] = []

        async def racing(device_key: str, state: Any) -> Any:
            found = await jobs(device_key, state)
            if raced or device_key != key or state != JobState.QUEUED or found:
                return found
            # This read came back empty: now the attempt queues its job, too late for it,
            # and tells the session (still live, so it sends no connection request).
            session = env.engine.by_device[key]
            signalled = session.jobs_signalled
            raced.append(await _read_serial(api, env, device_id))
            await _until(
                lambda: session.jobs_signalled != signalled, "the attempt never told the session"
            )
            assert await store.job(raced[0], 1) is not None
            return found

        store.jobs = racing  # type: ignore[method-assign]
        cpe.config.faults.refuse_connection_requests = True  # only this session can take it
        sessions = cpe.sessions
        try:
            await cpe.inform("4 VALUE CHANGE")
        finally:
            store.jobs = jobs  # type: ignore[method-assign]
        assert raced, "the session never looked for jobs"
        body = await wait_terminal(api, env.headers, raced[0], timeout=5)
        assert body["status"] == "completed", body
        assert [h["event"] for h in body["history"]] == ["running", "completed"], body
        assert cpe.sessions == sessions + 1


async def test_a_job_told_while_the_queued_cpes_are_re_read_is_not_forgotten(
    api: Api,
) -> None:
    # Every second the ACS re-reads which CPEs have queued jobs. An attempt that queues a job
    # and tells the ACS while that read is under way (the read having missed the job) must
    # not be erased by the read's result: a session of that CPE, its Inform being taken at
    # that moment, would otherwise end without looking for jobs, and the attempt would wait
    # out cwmp_session_wait_s for nothing.
    async with acs_env(api, scheduler=False) as env:
        engine = env.engine
        queued_keys = engine.store.queued_keys

        async def read_while_told() -> set[str]:
            snapshot = await queued_keys()
            engine.job_queued("CPE-TOLD-MEANWHILE")
            return snapshot

        engine.store.queued_keys = read_while_told  # type: ignore[method-assign]
        try:
            await engine.refresh_deferred()
        finally:
            engine.store.queued_keys = queued_keys  # type: ignore[method-assign]
        assert "CPE-TOLD-MEANWHILE" in engine.queued
        # The next read, without the job in the database, is what counts again.
        await engine.refresh_deferred()
        assert "CPE-TOLD-MEANWHILE" not in engine.queued
