"""Fixtures shared by every test: real databases on both engines, a real server on a socket.

Databases: migrations run once per session into a template (a SQLite file; a PostgreSQL
template database), and each test gets a fresh copy — procrastinate's approach.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx2
import psycopg
import pytest
import uvicorn
from cryptography.fernet import Fernet

from headless_ops.api.app import create_app
from headless_ops.api.runtime import Runtime
from headless_ops.auth.tokens import create_token
from headless_ops.config import Settings
from headless_ops.crypto import load_keys
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.store.db import Database
from headless_ops.store.migrate import upgrade
from tests.support.postgres import PostgresCluster

#: Fixtures defined in support modules, available to every test.
pytest_plugins = ["tests.support.sshd"]

ENGINES = ["sqlite", "postgresql"]
_counter = itertools.count()


@pytest.fixture(scope="session", autouse=True)
def _clean_environment() -> Iterator[None]:
    """Tests never see the developer's own HEADLESS_OPS_* settings."""
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("HEADLESS_OPS_")}
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One PostgreSQL cluster for the session, with a migrated template database."""
    cluster = PostgresCluster()
    cluster.start()
    try:
        with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("CREATE DATABASE ho_template")
        upgrade(Settings(database_url=cluster.url("ho_template")))
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database file to copy."""
    data_dir = tmp_path_factory.mktemp("sqlite-template")
    settings = Settings(data_dir=data_dir)
    upgrade(settings)
    return data_dir / "headless-ops.db"


def fresh_pg_database(cluster: PostgresCluster) -> str:
    """A new database cloned from the migrated template; returns its name."""
    name = f"ho_test_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE ho_template')
    return name


def drop_pg_database(cluster: PostgresCluster, name: str) -> None:
    """Drop a test database, disconnecting whoever is still on it."""
    with psycopg.connect(cluster.url().replace("+psycopg", ""), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    """Parametrises a test over both engines."""
    return str(request.param)


@pytest.fixture
def settings(
    engine_name: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Settings]:
    """Settings on a fresh, migrated database of the current engine."""
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    keys: dict[str, object] = {
        "secret_keys": Fernet.generate_key().decode(),
        "token_hash_key": "test-hash-key",
        # The examples of the contract name /var/backups; nothing is written there unless a
        # test runs a backup, and those use tmp_path/backups.
        "backup_file_roots": [tmp_path / "backups", Path("/var/backups")],
    }
    if engine_name == "sqlite":
        shutil.copy(request.getfixturevalue("sqlite_template"), data_dir / "headless-ops.db")
        yield Settings(data_dir=data_dir, **keys)
        return
    cluster: PostgresCluster = request.getfixturevalue("pg_cluster")
    name = fresh_pg_database(cluster)
    try:
        yield Settings(data_dir=data_dir, database_url=cluster.url(name), **keys)
    finally:
        drop_pg_database(cluster, name)


@pytest.fixture
async def runtime(settings: Settings) -> AsyncIterator[Runtime]:
    """A runtime on the fresh database, with an empty helper registry."""
    box, hasher = load_keys(settings)
    rt = Runtime(settings, Database(settings), box, hasher, HelperRegistry())
    try:
        yield rt
    finally:
        await rt.close()


@dataclass
class Api:
    """A real server on a loopback socket, and ways to call it."""

    runtime: Runtime
    base_url: str
    client: httpx2.AsyncClient
    tokens: dict[str, str] = field(default_factory=dict)

    async def token(self, tenant: str = "acme", scopes: list[str] | None = None) -> str:
        """A bearer token of ``tenant`` with ``scopes`` (admin by default)."""
        _, bearer = await create_token(
            self.runtime.db,
            self.runtime.hasher,
            tenant=tenant,
            name="test",
            scopes=scopes or ["admin"],
        )
        return bearer

    async def auth(self, tenant: str = "acme", scopes: list[str] | None = None) -> dict[str, str]:
        """``Authorization`` header for a new token."""
        return {"Authorization": f"Bearer {await self.token(tenant, scopes)}"}


@pytest.fixture
async def api(runtime: Runtime) -> AsyncIterator[Api]:
    """The app served by uvicorn on 127.0.0.1 (ephemeral port) in the test's event loop."""
    app = create_app(runtime, close_runtime=False)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    async with httpx2.AsyncClient(base_url=base, timeout=30) as client:
        try:
            yield Api(runtime, base, client)
        finally:
            server.should_exit = True
            await task
