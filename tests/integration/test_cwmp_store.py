"""The ACS's lookup of a device registered ahead of its CPE's first Inform, on both engines:
found by serial number through its expression index, never a device another CPE is bound
to, OUI and product class matched when the device names them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from headless_ops.cwmp.store import CwmpStore
from tests.conftest import Api
from tests.support.api_helpers import make_device


async def test_a_device_registered_ahead_is_found_by_its_serial(api: Api) -> None:
    headers = await api.auth()
    other = await api.auth(tenant="globex")
    store = CwmpStore(api.runtime.db)
    await make_device(api, headers, "ssh-box", "ssh")  # no serial at all
    for i in range(40):
        await make_device(api, headers, f"gw-{i}", connection={"serial_number": f"SN{i:04d}"})
    narrow = await make_device(
        api,
        other,
        "gw-narrow",
        connection={"serial_number": "SNX", "oui": "202BC1", "product_class": "BM632w"},
    )

    found = await store.find_inventory_device("202BC1", "BM632w", "SN0017")
    assert found is not None and found.id.startswith("dev_")
    assert found.connection == {"serial_number": "SN0017"}
    assert await store.find_inventory_device("202BC1", "BM632w", "SN9999") is None
    # OUI and product class, when the device names them, must match too.
    assert (await store.find_inventory_device("202bc1", "BM632w", "SNX")).id == narrow["id"]
    assert await store.find_inventory_device("001122", "BM632w", "SNX") is None
    assert await store.find_inventory_device("202BC1", "Other", "SNX") is None

    # Once a CPE is bound to it, another CPE with the same serial does not take it.
    await store.bind_device(
        device_key="202BC1-BM632w-SN0017",
        tenant_id=found.tenant_id,
        device_id=found.id,
        oui="202BC1",
        product_class="BM632w",
        serial_number="SN0017",
        manufacturer=None,
        now=datetime.now(UTC),
    )
    assert await store.find_inventory_device("202BC1", "BM632w", "SN0017") is None


async def test_the_serial_lookup_uses_its_index(api: Api) -> None:
    # The plan of the very statement the lookup runs (captured as it executes).
    store = CwmpStore(api.runtime.db)
    captured: list[tuple[str, Any]] = []

    def capture(_conn: object, _cursor: object, statement: str, params: Any, *_: object) -> None:
        if "devices" in statement and "serial_number" in statement:
            captured.append((statement, params))

    # On every engine (SQLite reads through an engine of their own).
    event.listen(Engine, "before_cursor_execute", capture)
    try:
        await store.find_inventory_device("202BC1", "BM632w", "SN0001")
    finally:
        event.remove(Engine, "before_cursor_execute", capture)
    assert len(captured) == 1
    statement, params = captured[0]
    async with api.runtime.db.read() as conn:
        if api.runtime.db.dialect == "sqlite":
            raw = await conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", params)
            plan = " ".join(str(row[-1]) for row in raw.all())
        else:
            # A near-empty table is cheapest to read whole: ask for the plan an index allows.
            await conn.execute(text("SET LOCAL enable_seqscan = off"))
            raw = await conn.exec_driver_sql(f"EXPLAIN {statement}", params)
            plan = " ".join(str(row[0]) for row in raw.all())
    assert "ix_devices_cwmp_serial" in plan, plan
