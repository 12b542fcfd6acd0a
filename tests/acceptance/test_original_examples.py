"""The original description's two example requests, verbatim, and every status code of the
contract, against ``headless-ops serve`` started as a subprocess and driven over real HTTP.

Runs on both engines: SQLite in the data dir (``serve`` migrates it itself) and an empty
PostgreSQL database brought up with ``headless-ops migrate``, as an operator would.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest

from tests.conftest import drop_pg_database
from tests.support.postgres import PostgresCluster
from tests.support.server import (
    GRACEFUL_EXIT,
    ServerProcess,
    empty_pg_database,
    free_port,
    run_cli,
    start_server,
)

OPS = "/api/v1/inventory_device_headless_operation/"

# The POST example of the original description, byte for byte (its indentation included).
ORIGINAL_POST_BODY = """{
  "device_id": "dev_67892",
  "operation_type": "backup_configuration",
  "scheduled_at": "2024-01-16T02:00:00Z",
  "parameters": {
    "backup_location": "s3://backups/devices/",
    "compression": true,
    "retention_days": 30
  },
  "priority": "normal"
}"""
# The GET example; op_12345 is replaced by the id the POST returned.
ORIGINAL_GET = "/api/v1/inventory_device_headless_operation/?id=op_12345&update_status=true"


@dataclass
class Served:
    """A server subprocess, its data and database, and a read-only token."""

    server: ServerProcess
    data_dir: Path
    database_url: str | None
    reader_token: str


def _token_from(stdout: str) -> str:
    match = re.search(r"^token:\s+(\S+)$", stdout, re.M)
    assert match, stdout
    return match.group(1)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    """One server per engine for the whole module, with device dev_67892 (ssh) created."""
    engine = str(request.param)
    data_dir = tmp_path_factory.mktemp(f"examples-{engine}") / "data"
    database_url = None
    cluster: PostgresCluster | None = None
    db_name = f"ho_examples_{id(request)}"
    if engine == "postgresql":
        cluster = request.getfixturevalue("pg_cluster")
        database_url = empty_pg_database(cluster, db_name)
    server: ServerProcess | None = None
    try:
        if database_url:
            # serve migrates SQLite only: on PostgreSQL the operator runs migrate first.
            done = run_cli("migrate", data_dir=data_dir, database_url=database_url)
            assert done.returncode == 0, done.stderr
            assert "migrated postgresql+psycopg://" in done.stdout
        server = start_server(data_dir, database_url=database_url)
        assert server.admin_token, server.stdout()
        made = run_cli(
            "token",
            "create",
            "--tenant",
            "default",
            "--scope",
            "operations:read",
            "--name",
            "reader",
            data_dir=data_dir,
            database_url=database_url,
        )
        assert made.returncode == 0, made.stderr
        with server.client() as client:
            r = client.post(
                "/api/v1/inventory_device/",
                json={
                    "id": "dev_67892",
                    "name": "router-67892",
                    "protocol": "ssh",
                    # A closed local port: a status refresh by a real helper fails at once.
                    "connection": {"host": "127.0.0.1", "port": free_port(), "username": "ops"},
                },
            )
            assert r.status_code == 201, r.text
        yield Served(server, data_dir, database_url, _token_from(made.stdout))
        assert server.stop() in GRACEFUL_EXIT  # SIGTERM shuts it down cleanly
    finally:
        if server is not None:
            server.stop()
        if cluster is not None:
            drop_pg_database(cluster, db_name)


@pytest.fixture
def client(served: Served) -> Iterator[httpx2.Client]:
    """An admin client of the module's server."""
    with served.server.client() as c:
        yield c


def assert_error_shape(r: httpx2.Response, status: int) -> dict[str, Any]:
    """``r`` has ``status`` and exactly the one JSON error shape; returns the body."""
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert set(body) == {"detail", "errors"}, body
    assert isinstance(body["detail"], str) and body["detail"]
    assert isinstance(body["errors"], list)
    for item in body["errors"]:
        assert set(item) == {"field", "message"}, item
        assert isinstance(item["field"], str) and isinstance(item["message"], str)
    return dict(body)


def test_original_examples_verbatim(served: Served, client: httpx2.Client) -> None:
    sent = json.loads(ORIGINAL_POST_BODY)
    r = client.post(
        "/api/v1/inventory_device_headless_operation/",
        content=ORIGINAL_POST_BODY.encode(),
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 201, r.text
    created = r.json()
    # Every field the example sent comes back unchanged, with the status the example shows.
    for key, value in sent.items():
        assert created[key] == value, key
    assert created["status"] == "scheduled"
    assert re.fullmatch(r"op_[0-9a-z]{26}", created["id"])
    assert r.headers["location"] == f"{served.server.base_url}{OPS}{created['id']}/"
    for stamp in ("created_at", "updated_at"):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", created[stamp])

    r = client.get(ORIGINAL_GET.replace("op_12345", created["id"]))
    assert r.status_code == 200, r.text
    page = r.json()
    assert page["count"] == 1
    assert [op["id"] for op in page["results"]] == [created["id"]]
    found = page["results"][0]
    for key, value in sent.items():
        assert found[key] == value, key
    # scheduled_at lies in the past, so a scheduler may already have moved it on; the
    # operation itself (fields, creation time) is what the example asks to see again.
    assert found["created_at"] == created["created_at"]
    assert found["status"] in {"scheduled", "pending", "running", "completed", "failed"}


def test_original_post_as_escaped_data_string(client: httpx2.Client) -> None:
    # "data: JSON string containing operation details": the same example as a form field
    # and as {"data": "<escaped JSON>"} is the same operation.
    sent = json.loads(ORIGINAL_POST_BODY)
    as_form = client.post(OPS, data={"data": ORIGINAL_POST_BODY})
    as_string = client.post(OPS, json={"data": ORIGINAL_POST_BODY})
    for r in (as_form, as_string):
        assert r.status_code == 201, r.text
        assert {k: r.json()[k] for k in sent} == sent
        assert r.json()["status"] == "scheduled"
    assert as_form.json()["id"] != as_string.json()["id"]


def test_200_list(client: httpx2.Client) -> None:
    r = client.get(OPS, params={"device_id": "dev_67892", "limit": 2})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"count", "next", "previous", "results"}
    assert body["count"] >= 1
    assert all(op["device_id"] == "dev_67892" for op in body["results"])


def test_400_malformed_json(client: httpx2.Client) -> None:
    r = client.post(
        OPS,
        content=ORIGINAL_POST_BODY[:60].encode(),  # cut off mid-object
        headers={"Content-Type": "application/json"},
    )
    body = assert_error_shape(r, 400)
    assert "malformed JSON" in body["detail"]
    assert [e["field"] for e in body["errors"]] == ["body"]


def test_400_invalid_parameters(client: httpx2.Client) -> None:
    bad = json.loads(ORIGINAL_POST_BODY)
    bad["parameters"]["backup_location"] = "ftp://backups/devices/"
    bad["parameters"]["retention_days"] = 0
    body = assert_error_shape(client.post(OPS, json=bad), 400)
    fields = {e["field"] for e in body["errors"]}
    assert fields == {"parameters.backup_location", "parameters.retention_days"}, body


def test_400_invalid_envelope_fields(client: httpx2.Client) -> None:
    bad = json.loads(ORIGINAL_POST_BODY)
    bad["priority"] = "urgent"
    bad["status"] = "completed"  # clients never set it: refused, not ignored
    body = assert_error_shape(client.post(OPS, json=bad), 400)
    assert {e["field"] for e in body["errors"]} == {"status"}, body
    del bad["status"]
    body = assert_error_shape(client.post(OPS, json=bad), 400)
    assert {e["field"] for e in body["errors"]} == {"priority"}, body


def test_400_timestamp_without_zone(client: httpx2.Client) -> None:
    bad = json.loads(ORIGINAL_POST_BODY)
    bad["scheduled_at"] = "2024-01-16T02:00:00"
    body = assert_error_shape(client.post(OPS, json=bad), 400)
    assert [e["field"] for e in body["errors"]] == ["scheduled_at"]


def test_400_invalid_query_parameter(client: httpx2.Client) -> None:
    body = assert_error_shape(client.get(OPS, params={"update_status": "perhaps"}), 400)
    assert [e["field"] for e in body["errors"]] == ["update_status"]


def test_401_missing_or_invalid_token(served: Served) -> None:
    with httpx2.Client(base_url=served.server.base_url, timeout=30) as anonymous:
        r = anonymous.get(OPS)
        assert_error_shape(r, 401)
        assert r.headers["www-authenticate"].startswith("Bearer")
        r = anonymous.post(OPS, content=ORIGINAL_POST_BODY.encode())
        assert_error_shape(r, 401)
    # A well-formed token id with the wrong secret.
    forged = served.server.admin_token.split(".")[0] + "." + "x" * 43  # type: ignore[union-attr]
    with served.server.client(forged) as impostor:
        r = impostor.get(OPS)
        assert_error_shape(r, 401)
        assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_403_scope_missing(served: Served) -> None:
    with served.server.client(served.reader_token) as reader:
        assert reader.get(OPS).status_code == 200  # reads are allowed …
        r = reader.post(
            OPS, content=ORIGINAL_POST_BODY.encode(), headers={"Content-Type": "application/json"}
        )
        body = assert_error_shape(r, 403)  # … scheduling is not
        assert "operations:write" in body["detail"]


def test_404_unknown_device(client: httpx2.Client) -> None:
    body = ORIGINAL_POST_BODY.replace("dev_67892", "dev_00000")
    r = client.post(OPS, content=body.encode(), headers={"Content-Type": "application/json"})
    detail = assert_error_shape(r, 404)["detail"]
    assert "dev_00000" in detail


def test_409_cancel_cancelled(client: httpx2.Client) -> None:
    future = json.loads(ORIGINAL_POST_BODY)
    future["scheduled_at"] = "2099-01-01T00:00:00Z"  # no scheduler will touch it meanwhile
    op_id = client.post(OPS, json=future).json()["id"]
    r = client.post(f"{OPS}{op_id}/cancel/")
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "cancelled"
    body = assert_error_shape(client.post(f"{OPS}{op_id}/cancel/"), 409)
    assert "cancelled" in body["detail"]
    assert client.get(f"{OPS}{op_id}/").json()["status"] == "cancelled"


def test_413_body_too_large(client: httpx2.Client) -> None:
    # Valid JSON, just over the default 1 MiB limit, declared by Content-Length.
    padded = json.loads(ORIGINAL_POST_BODY)
    padded["parameters"]["padding"] = "x" * (1024 * 1024)
    r = client.post(OPS, json=padded)
    body = assert_error_shape(r, 413)
    assert str(1024 * 1024) in body["detail"]


def test_413_streamed_body_too_large(client: httpx2.Client) -> None:
    # No Content-Length (chunked): the limit is enforced while the body streams in.
    def chunks() -> Iterator[bytes]:
        yield b'{"device_id": "dev_67892", "pad": "'
        for _ in range(18):
            yield b"y" * 65536
        yield b'"}'

    r = client.post(OPS, content=chunks(), headers={"Content-Type": "application/json"})
    assert_error_shape(r, 413)


def test_415_unsupported_content_type(client: httpx2.Client) -> None:
    r = client.post(
        OPS, content=ORIGINAL_POST_BODY.encode(), headers={"Content-Type": "text/plain"}
    )
    body = assert_error_shape(r, 415)
    assert "text/plain" in body["detail"]


def test_nothing_unexpected_in_the_log(served: Served) -> None:
    # Every request above was answered on purpose: no 500 and no traceback in the log.
    assert "Traceback" not in served.server.stderr()
    assert "unhandled error" not in served.server.stderr()
