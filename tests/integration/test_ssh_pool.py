"""The connection pool: the global cap holds, idle connections are reused for the same
device (and only with the same credentials), evicted when another device needs the slot,
and closed after their idle time."""

from __future__ import annotations

import asyncio
from pathlib import Path

from headless_ops.helpers.ssh.connections import ConnectionPool, ConnectParams
from headless_ops.simulator.ssh_device import DEFAULT_PASSWORD, FakeDevice, running_device


def _params(dev: FakeDevice, key: str, password: str = DEFAULT_PASSWORD) -> ConnectParams:
    return ConnectParams(
        key=key,
        host=dev.host,
        port=dev.port,
        username="admin",
        password=password,
        host_key=dev.host_key_openssh,
        host_key_policy="require",
    )


async def test_the_cap_holds_under_concurrency(tmp_path: Path) -> None:
    pool = ConnectionPool(max_connections=2, connect_timeout_s=5, keepalive_s=0, idle_s=0)
    peak = 0
    async with running_device(tmp_path / "dev") as dev:

        async def use(i: int) -> None:
            nonlocal peak
            async with pool.lease(_params(dev, f"t/d{i}")) as (conn, _):
                peak = max(peak, pool.open_connections)
                await conn.run("true", check=True)
                await asyncio.sleep(0.05)

        await asyncio.gather(*(use(i) for i in range(6)))
        await pool.aclose()
    assert peak == 2
    assert pool.opened == 6 and pool.open_connections == 0


async def test_idle_connections_are_reused_for_the_same_device_and_credentials(
    tmp_path: Path,
) -> None:
    pool = ConnectionPool(max_connections=4, connect_timeout_s=5, keepalive_s=0, idle_s=30)
    async with running_device(tmp_path / "dev") as dev:
        for _ in range(3):
            async with pool.lease(_params(dev, "t/a")) as (conn, _):
                await conn.run("true", check=True)
        assert pool.opened == 1 and dev.connections_accepted == 1
        # Other credentials (a rotated password): the idle connection is not reused.
        rotated = ConnectParams(
            key="t/a",
            host=dev.host,
            port=dev.port,
            username="admin",
            password=None,
            private_key=None,
            host_key=dev.host_key_openssh,
        )
        try:
            async with pool.lease(rotated):
                pass
        except Exception as exc:  # no password: the fake refuses; what matters is a new try
            assert "authentication" in str(exc)
        assert pool.opened == 1 and dev.connections_accepted == 1
        await pool.aclose()
    assert pool.open_connections == 0


async def test_idle_connections_of_other_devices_make_room(tmp_path: Path) -> None:
    pool = ConnectionPool(max_connections=1, connect_timeout_s=5, keepalive_s=0, idle_s=30)
    async with running_device(tmp_path / "dev") as dev:
        async with pool.lease(_params(dev, "t/a")) as (conn, _):
            await conn.run("true", check=True)
        assert pool.open_connections == 1  # kept idle
        async with asyncio.timeout(10), pool.lease(_params(dev, "t/b")) as (conn, _):
            await conn.run("true", check=True)  # no deadlock: a's idle connection was closed
        assert pool.opened == 2 and pool.open_connections == 1
        await pool.aclose()


async def test_idle_connections_are_closed_after_their_idle_time(tmp_path: Path) -> None:
    pool = ConnectionPool(max_connections=4, connect_timeout_s=5, keepalive_s=0, idle_s=0.2)
    async with running_device(tmp_path / "dev") as dev:
        async with pool.lease(_params(dev, "t/a")) as (conn, _):
            await conn.run("true", check=True)
        assert pool.open_connections == 1
        async with asyncio.timeout(10):
            while pool.open_connections:  # noqa: ASYNC110 - polling the pool from outside
                await asyncio.sleep(0.05)
        await pool.aclose()


async def test_a_failed_block_does_not_return_its_connection(tmp_path: Path) -> None:
    pool = ConnectionPool(max_connections=4, connect_timeout_s=5, keepalive_s=0, idle_s=30)
    async with running_device(tmp_path / "dev") as dev:
        try:
            async with pool.lease(_params(dev, "t/a")):
                raise RuntimeError("the operation failed")
        except RuntimeError:
            pass
        assert pool.open_connections == 0
        async with pool.lease(_params(dev, "t/a")) as (conn, _):
            await conn.run("true", check=True)
        assert pool.opened == 2
        await pool.aclose()
