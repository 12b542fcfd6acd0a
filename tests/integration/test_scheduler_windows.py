"""Maintenance windows on both engines: the ``/api/v1/maintenance_window/`` resource (CRUD,
validation, conflicts, tenant isolation, references from devices and operations), and
scheduling inside windows on a controllable clock: an operation due outside its window
waits ``pending`` with the next opening shown, starts when the window opens, never with
less than the margin left; an operation's own window overrides its device's; changing a
window re-evaluates what waits for it at once.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from headless_ops.timeutil import iso
from tests.conftest import Api
from tests.support.sched import (
    Clock,
    TrackingHelper,
    add_device,
    add_op,
    assert_error,
    eventually,
    future_base,
    make_scheduler,
    running,
    setup,
    use_clock,
)

WINDOWS = "/api/v1/maintenance_window/"
OPS = "/api/v1/inventory_device_headless_operation/"
DEVICES = "/api/v1/inventory_device/"


async def _create(api: Api, headers: dict[str, str], body: dict[str, Any]) -> dict[str, Any]:
    r = await api.client.post(WINDOWS, json=body, headers=headers)
    assert r.status_code == 201, r.text
    created: dict[str, Any] = r.json()
    return created


def _ranges(*pairs: tuple[Any, Any]) -> list[dict[str, str | None]]:
    return [{"start": iso(a), "end": iso(b)} for a, b in pairs]


async def _get_op(api: Api, headers: dict[str, str], op_id: str) -> dict[str, Any]:
    r = await api.client.get(f"{OPS}{op_id}/", headers=headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


# -- the resource -----------------------------------------------------------------------


async def test_recurring_window_crud(api: Api) -> None:
    # 12:00 UTC on 15 January: 07:00 in New York (EST, UTC-5).
    clock = Clock(future_base(12))
    use_clock(api.runtime, clock)
    day = clock().date()
    headers = await api.auth()
    r = await api.client.post(
        WINDOWS,
        json={
            "name": "nightly",
            "timezone": "America/New_York",
            "cron": "0 2 * * *",
            "duration_minutes": 120,
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith("/api/v1/maintenance_window/nightly/")
    created = r.json()
    assert {k: created[k] for k in ("name", "timezone", "cron", "duration_minutes")} == {
        "name": "nightly",
        "timezone": "America/New_York",
        "cron": "0 2 * * *",
        "duration_minutes": 120,
    }
    assert created["ranges"] == []
    assert created["open_now"] is False
    # 02:00 EST the next day is 07:00 UTC.
    assert created["next_start"] == f"{day + timedelta(days=1)}T07:00:00Z"

    r = await api.client.get(f"{WINDOWS}nightly/", headers=headers)
    assert (r.status_code, r.json()) == (200, created)
    r = await api.client.get(WINDOWS, headers=headers)
    assert r.json()["count"] == 1
    assert [w["name"] for w in r.json()["results"]] == ["nightly"]

    r = await api.client.put(
        f"{WINDOWS}nightly/",
        json={"timezone": "Europe/Paris", "cron": "30 13 * * *", "duration_minutes": 60},
        headers=headers,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["timezone"], updated["cron"], updated["duration_minutes"]) == (
        "Europe/Paris",
        "30 13 * * *",
        60,
    )
    # 13:30 in Paris (CET, UTC+1) is 12:30 UTC, later today.
    assert updated["next_start"] == f"{day}T12:30:00Z"
    r = await api.client.get(f"{WINDOWS}nightly/", headers=headers)
    assert r.json()["cron"] == "30 13 * * *"

    r = await api.client.delete(f"{WINDOWS}nightly/", headers=headers)
    assert r.status_code == 204, r.text
    assert_error(await api.client.get(f"{WINDOWS}nightly/", headers=headers), 404)
    assert_error(await api.client.delete(f"{WINDOWS}nightly/", headers=headers), 404)
    assert (await api.client.get(WINDOWS, headers=headers)).json()["count"] == 0


async def test_one_off_ranges_window(api: Api) -> None:
    clock = Clock(future_base(12))
    use_clock(api.runtime, clock)
    now = clock()
    headers = await api.auth()
    hour = timedelta(hours=1)
    # Open now (one hour left, more than the 5-minute default margin).
    open_now = await _create(
        api,
        headers,
        {
            "name": "open",
            "ranges": _ranges((now - hour, now + hour), (now + 5 * hour, now + 6 * hour)),
        },
    )
    assert open_now["open_now"] is True
    assert open_now["next_start"] == iso(now)
    assert open_now["ranges"] == _ranges((now - hour, now + hour), (now + 5 * hour, now + 6 * hour))
    assert (open_now["cron"], open_now["duration_minutes"], open_now["timezone"]) == (
        None,
        None,
        "UTC",
    )
    # Offsets are stored as UTC; a range shorter than the margin is never a start.
    r = await api.client.post(
        WINDOWS,
        json={
            "name": "later",
            "ranges": [
                {"start": "2000-01-01T00:00:00+01:00", "end": "2000-01-01T01:00:00+01:00"},
                {"start": iso(now + hour), "end": iso(now + hour + timedelta(minutes=3))},
                {"start": iso(now + 2 * hour), "end": iso(now + 3 * hour)},
            ],
        },
        headers=headers,
    )
    assert r.status_code == 201, r.text
    later = r.json()
    assert later["ranges"][0] == {"start": "1999-12-31T23:00:00Z", "end": "2000-01-01T00:00:00Z"}
    assert later["open_now"] is False
    assert later["next_start"] == iso(now + 2 * hour)


async def test_window_validation_names_the_bad_fields(api: Api) -> None:
    headers = await api.auth()
    cases: list[tuple[dict[str, Any], set[str]]] = [
        (
            {
                "name": "w",
                "timezone": "Mars/Olympus_Mons",
                "cron": "0 2 * * *",
                "duration_minutes": 60,
            },
            {"timezone"},
        ),
        ({"name": "w", "cron": "61 2 * * *", "duration_minutes": 60}, {"cron"}),
        ({"name": "w", "cron": "0 2 * *", "duration_minutes": 60}, {"cron"}),
        ({"name": "w", "cron": "0 2 * * *"}, {"duration_minutes"}),
        (
            {
                "name": "w",
                "cron": "0 2 * * *",
                "duration_minutes": 60,
                "ranges": [{"start": "2030-01-01T00:00:00Z", "end": "2030-01-01T01:00:00Z"}],
            },
            {"cron", "ranges"},
        ),
        ({"name": "w"}, {"cron", "ranges"}),
        (
            {
                "name": "w",
                "ranges": [{"start": "2030-01-01T01:00:00Z", "end": "2030-01-01T00:00:00Z"}],
            },
            {"ranges"},
        ),
        (
            {
                "name": "w",
                "ranges": [{"start": "2030-01-01T00:00:00", "end": "2030-01-01T01:00:00Z"}],
            },
            {"ranges.0.start"},
        ),
        ({"name": "w", "cron": "0 2 * * *", "duration_minutes": 0}, {"duration_minutes"}),
        ({"name": "w", "cron": "0 2 * * *", "duration_minutes": 60, "color": "red"}, {"color"}),
        ({"name": "-bad name", "cron": "0 2 * * *", "duration_minutes": 60}, {"name"}),
    ]
    for body, fields in cases:
        r = await api.client.post(WINDOWS, json=body, headers=headers)
        assert_error(r, 400, fields)
    # The same rules on update.
    await _create(api, headers, {"name": "w", "cron": "0 2 * * *", "duration_minutes": 60})
    r = await api.client.put(
        f"{WINDOWS}w/",
        json={"timezone": "Nowhere/City", "cron": "0 2 * * *", "duration_minutes": 60},
        headers=headers,
    )
    assert_error(r, 400, {"timezone"})
    r = await api.client.put(f"{WINDOWS}w/", json={"cron": "0 2 * * *"}, headers=headers)
    assert_error(r, 400, {"duration_minutes"})
    assert (await api.client.get(WINDOWS, headers=headers)).json()["count"] == 1


async def test_window_conflicts_and_unknown_references(api: Api) -> None:
    headers = await api.auth()
    nightly = {"name": "nightly", "cron": "0 2 * * *", "duration_minutes": 60}
    await _create(api, headers, nightly)
    assert_error(await api.client.post(WINDOWS, json=nightly, headers=headers), 409)

    # Unknown windows named by a device or an operation are a 400 on that field.
    r = await api.client.post(
        DEVICES,
        json={"id": "dev_x", "name": "x", "protocol": "cwmp", "maintenance_window": "nope"},
        headers=headers,
    )
    assert_error(r, 400, {"maintenance_window"})
    r = await api.client.post(
        DEVICES,
        json={"id": "dev_1", "name": "gw-1", "protocol": "cwmp", "maintenance_window": "nightly"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["maintenance_window"] == "nightly"
    r = await api.client.post(
        OPS,
        json={"device_id": "dev_1", "operation_type": "reboot", "maintenance_window": "nope"},
        headers=headers,
    )
    assert_error(r, 400, {"maintenance_window"})

    # In use by a device: cannot go.
    r = await api.client.delete(f"{WINDOWS}nightly/", headers=headers)
    assert "device" in assert_error(r, 409)["detail"]
    # In use by an unfinished operation only: cannot go either.
    await _create(api, headers, {**nightly, "name": "other"})
    r = await api.client.post(
        OPS,
        json={"device_id": "dev_1", "operation_type": "reboot", "maintenance_window": "other"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert_error(await api.client.delete(f"{WINDOWS}other/", headers=headers), 409)
    r = await api.client.post(f"{OPS}{r.json()['id']}/cancel/", headers=headers)
    assert r.status_code == 200
    r = await api.client.delete(f"{WINDOWS}other/", headers=headers)
    assert r.status_code == 204, r.text


async def test_windows_are_tenant_scoped(api: Api) -> None:
    acme = await api.auth("acme")
    other = await api.auth("other")
    body = {"name": "nightly", "cron": "0 2 * * *", "duration_minutes": 60}
    await _create(api, acme, body)
    await _create(api, acme, {**body, "name": "acme-only"})
    for call in (
        api.client.get(f"{WINDOWS}nightly/", headers=other),
        api.client.put(
            f"{WINDOWS}nightly/", json={"cron": "0 3 * * *", "duration_minutes": 60}, headers=other
        ),
        api.client.delete(f"{WINDOWS}nightly/", headers=other),
    ):
        assert_error(await call, 404)
    assert (await api.client.get(WINDOWS, headers=other)).json()["count"] == 0
    # Names are per tenant.
    await _create(api, other, {**body, "cron": "0 4 * * *"})
    assert (await api.client.get(f"{WINDOWS}nightly/", headers=acme)).json()["cron"] == "0 2 * * *"
    r = await api.client.post(
        DEVICES,
        json={"id": "dev_o", "name": "o", "protocol": "cwmp", "maintenance_window": "acme-only"},
        headers=other,
    )
    assert_error(r, 400, {"maintenance_window"})


# -- scheduling inside windows --------------------------------------------------------------


async def test_operation_outside_its_window_waits_then_starts_when_it_opens(api: Api) -> None:
    runtime = api.runtime
    clock = Clock(future_base(12))
    use_clock(runtime, clock)
    runtime.settings.window_margin_s = 60
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await _create(
        api,
        headers,
        {
            "name": "nightly",
            "timezone": "America/New_York",
            "cron": "0 2 * * *",
            "duration_minutes": 60,
        },
    )
    await add_device(runtime, tenant, "dev_1", window="nightly")
    op_id = await add_op(runtime, tenant, "dev_1")
    scheduler = make_scheduler(runtime, clock)
    await scheduler.run_until_idle(timeout=20)

    opening = clock().replace(hour=7) + timedelta(days=1)  # 02:00 in New York
    body = await _get_op(api, headers, op_id)
    assert (body["status"], body["wait_reason"]) == ("pending", "maintenance_window")
    assert body["next_window_start"] == iso(opening)
    assert [e["event"] for e in body["history"]] == ["pending"]
    assert iso(opening)[:19] in body["history"][0]["message"]  # the opening, to the second
    assert helper.attempts == []

    clock.set(opening - timedelta(seconds=1))
    await scheduler.run_until_idle(timeout=20)
    assert (await _get_op(api, headers, op_id))["status"] == "pending"
    clock.set(opening)
    await scheduler.run_until_idle(timeout=20)
    body = await _get_op(api, headers, op_id)
    assert (body["status"], body["started_at"]) == ("completed", iso(opening))
    assert (body["wait_reason"], body["next_window_start"]) == (None, None)
    assert [e["event"] for e in body["history"]] == ["pending", "running", "completed"]


async def test_no_start_with_less_than_the_margin_left(api: Api) -> None:
    runtime = api.runtime
    # Every hour, for 30 minutes; nothing may start with less than 10 minutes left.
    clock = Clock(future_base(12) + timedelta(minutes=19))
    use_clock(runtime, clock)
    runtime.settings.window_margin_s = 600
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    await _create(api, headers, {"name": "hourly", "cron": "0 * * * *", "duration_minutes": 30})
    await add_device(runtime, tenant, "dev_a", window="hourly")
    await add_device(runtime, tenant, "dev_b", window="hourly")
    scheduler = make_scheduler(runtime, clock)

    early = await add_op(runtime, tenant, "dev_a")  # 11 minutes left: starts
    await scheduler.run_until_idle(timeout=20)
    assert (await _get_op(api, headers, early))["status"] == "completed"

    clock.advance(120)  # 12:21, 9 minutes left: the window is open, but too little is left
    tight = await add_op(runtime, tenant, "dev_b")
    await scheduler.run_until_idle(timeout=20)
    body = await _get_op(api, headers, tight)
    assert (body["status"], body["wait_reason"]) == ("pending", "maintenance_window")
    next_hour = future_base(13)
    assert body["next_window_start"] == iso(next_hour)
    assert (await api.client.get(f"{WINDOWS}hourly/", headers=headers)).json()["open_now"] is True

    clock.set(next_hour)
    await scheduler.run_until_idle(timeout=20)
    assert (await _get_op(api, headers, tight))["status"] == "completed"
    assert helper.order() == [early, tight]


async def test_operation_window_overrides_the_device_window(api: Api) -> None:
    runtime = api.runtime
    clock = Clock(future_base(12))
    use_clock(runtime, clock)
    runtime.settings.window_margin_s = 60
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    now, hour = clock(), timedelta(hours=1)
    await _create(api, headers, {"name": "open", "ranges": _ranges((now - hour, now + hour))})
    await _create(api, headers, {"name": "closed", "ranges": _ranges((now + hour, now + 2 * hour))})
    await add_device(runtime, tenant, "dev_a", window="closed")
    await add_device(runtime, tenant, "dev_b", window="open")
    await add_device(runtime, tenant, "dev_c", window="closed")
    opened = await add_op(runtime, tenant, "dev_a", maintenance_window="open")
    closed = await add_op(runtime, tenant, "dev_b", maintenance_window="closed")
    device_default = await add_op(runtime, tenant, "dev_c")
    await make_scheduler(runtime, clock).run_until_idle(timeout=20)

    assert (await _get_op(api, headers, opened))["status"] == "completed"
    for op_id in (closed, device_default):
        body = await _get_op(api, headers, op_id)
        assert (body["status"], body["next_window_start"]) == ("pending", iso(now + hour))
    assert helper.order() == [opened]


async def test_changing_a_window_reevaluates_waiting_operations_at_once(api: Api) -> None:
    runtime = api.runtime
    clock = Clock(future_base(12))
    use_clock(runtime, clock)
    runtime.settings.window_margin_s = 60
    runtime.settings.safety_poll_s = 30  # a re-evaluation within seconds is the wake-up's
    runtime.settings.shutdown_grace_s = 2
    helper = TrackingHelper()
    runtime.registry.register(helper)
    headers = await api.auth()
    tenant = await setup(runtime)
    now, hour = clock(), timedelta(hours=1)
    await _create(api, headers, {"name": "w", "ranges": _ranges((now + 3 * hour, now + 4 * hour))})
    await add_device(runtime, tenant, "dev_1", window="w")
    op_id = await add_op(runtime, tenant, "dev_1")

    async def next_start_is(expected: str) -> bool:
        body = await _get_op(api, headers, op_id)
        return body["status"] == "pending" and body["next_window_start"] == expected

    async with running(make_scheduler(runtime, clock)):
        await eventually(lambda: next_start_is(iso(now + 3 * hour)), timeout=5)
        # Earlier, but still not now: the operation now waits for the new opening.
        r = await api.client.put(
            f"{WINDOWS}w/", json={"ranges": _ranges((now + hour, now + 2 * hour))}, headers=headers
        )
        assert r.status_code == 200, r.text
        await eventually(lambda: next_start_is(iso(now + hour)), timeout=5)
        assert helper.attempts == []
        # Open now: it starts.
        r = await api.client.put(
            f"{WINDOWS}w/", json={"ranges": _ranges((now - hour, now + hour))}, headers=headers
        )
        assert r.status_code == 200, r.text

        async def completed() -> bool:
            return (await _get_op(api, headers, op_id))["status"] == "completed"

        await eventually(completed, timeout=5)
    assert helper.order() == [op_id]
