"""The backup store on both engines: ``file://`` and ``s3://`` (moto's real HTTP server).

Covers saving plain and gzip backups (what is on disk or in the bucket, and ``content()``
giving the configuration back), listing newest first, retention pruning rows and objects
wherever they are, the allowed ``file://`` roots (``..``-free paths, symlinks and prefix
tricks included), store errors as operation errors (a missing bucket, a corrupted object),
and the API: ``/api/v1/inventory_device/{id}/backups/`` and its download, 404 for another
device's or tenant's backup, and the 400 for a ``backup_configuration`` operation whose
location is outside the allowed roots.
"""

from __future__ import annotations

import gzip
import hashlib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from headless_ops.api.runtime import Runtime
from headless_ops.artifacts.backups import BackupStore
from headless_ops.auth.tokens import ensure_tenant
from headless_ops.errors import NotFound
from headless_ops.helpers.base import PermanentError, RetryableError
from headless_ops.timeutil import utcnow
from tests.conftest import Api
from tests.support.api_helpers import DEVICES, OPS, assert_error, make_device
from tests.support.s3 import S3Server, s3_server  # noqa: F401

CONFIG = b"hostname gw-1\ninterface eth0\n ip address 192.0.2.1/24\n" * 40
CONFIG_SHA = hashlib.sha256(CONFIG).hexdigest()
GZIP_MAGIC = b"\x1f\x8b"


async def _save(store: BackupStore, location: str, **overrides: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "tenant_id": "ten_a",
        "device_id": "dev_1",
        "operation_id": None,
        "data": CONFIG,
        "location": location,
        "compression": False,
        "retention_days": None,
        "method": "ssh",
        **overrides,
    }
    return await store.save(**kwargs)


def _path(uri: str) -> Path:
    assert uri.startswith("file:///"), uri
    return Path(uri.removeprefix("file://"))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def test_file_backups_plain_and_gzip(runtime: Runtime, tmp_path: Path) -> None:
    store = runtime.backups
    root = tmp_path / "backups"
    location = f"{root.as_uri()}/site-a/"

    plain = await _save(store, location, operation_id="op_1")
    assert plain["uri"].startswith(f"{root.as_uri()}/site-a/ten_a/dev_1/")
    assert plain["uri"].endswith(f"-{plain['backup_id']}.cfg")
    assert plain["size"] == plain["stored_size"] == len(CONFIG)
    assert plain["sha256"] == CONFIG_SHA
    assert plain["compressed"] is False and plain["pruned"] == 0 and plain["method"] == "ssh"
    assert _path(plain["uri"]).read_bytes() == CONFIG

    zipped = await _save(store, location, compression=True)
    assert zipped["uri"].endswith(f"-{zipped['backup_id']}.cfg.gz")
    on_disk = _path(zipped["uri"]).read_bytes()
    assert on_disk.startswith(GZIP_MAGIC) and on_disk != CONFIG
    assert gzip.decompress(on_disk) == CONFIG
    assert zipped["stored_size"] == len(on_disk) < len(CONFIG)
    assert zipped["size"] == len(CONFIG) and zipped["sha256"] == CONFIG_SHA

    # Exactly the two objects: no temporary file left behind.
    assert _files(root) == sorted([_path(plain["uri"]), _path(zipped["uri"])])

    count, rows = await store.list("ten_a", "dev_1", 10, 0)
    assert count == 2
    assert [r.id for r in rows] == [zipped["backup_id"], plain["backup_id"]]  # newest first
    rendered = BackupStore.render(rows[1])
    assert rendered["operation_id"] == "op_1" and rendered["uri"] == plain["uri"]
    assert rendered["compressed"] is False and rendered["size"] == len(CONFIG)
    count, rows = await store.list("ten_a", "dev_1", 1, 1)
    assert count == 2 and [r.id for r in rows] == [plain["backup_id"]]

    for saved in (plain, zipped):
        row = await store.get("ten_a", "dev_1", saved["backup_id"])
        assert await store.content(row) == CONFIG
    # Another device's or tenant's view of the id finds nothing.
    with pytest.raises(NotFound):
        await store.get("ten_a", "dev_2", plain["backup_id"])
    with pytest.raises(NotFound):
        await store.get("ten_b", "dev_1", plain["backup_id"])
    assert (await store.list("ten_b", "dev_1", 10, 0))[0] == 0

    # A changed object fails its checksum rather than being served.
    _path(plain["uri"]).write_bytes(CONFIG + b"tampered\n")
    row = await store.get("ten_a", "dev_1", plain["backup_id"])
    with pytest.raises(RetryableError) as corrupt:
        await store.content(row)
    assert corrupt.value.code == "backup_corrupt"
    # A vanished one is a store error.
    _path(plain["uri"]).unlink()
    with pytest.raises(RetryableError) as gone:
        await store.content(row)
    assert gone.value.code == "backup_store_error"


async def test_retention_prunes_old_backups(runtime: Runtime, tmp_path: Path) -> None:
    store = runtime.backups
    location = (tmp_path / "backups").as_uri()
    now = utcnow()
    old = await _save(store, location, now=now - timedelta(days=3))
    old_zip = await _save(store, location, now=now - timedelta(days=2), compression=True)
    recent = await _save(store, location, now=now - timedelta(hours=12))
    other_device = await _save(store, location, device_id="dev_2", now=now - timedelta(days=3))
    assert all(_path(b["uri"]).exists() for b in (old, old_zip, recent, other_device))

    new = await _save(store, location, retention_days=1, now=now)
    assert new["pruned"] == 2
    for gone in (old, old_zip):
        assert not _path(gone["uri"]).exists()
        with pytest.raises(NotFound):
            await store.get("ten_a", "dev_1", gone["backup_id"])
    count, rows = await store.list("ten_a", "dev_1", 10, 0)
    assert count == 2 and [r.id for r in rows] == [new["backup_id"], recent["backup_id"]]
    # Retention is per device: dev_2's backup of the same age stays.
    assert _path(other_device["uri"]).exists()
    assert (await store.list("ten_a", "dev_2", 10, 0))[0] == 1

    # Nothing older than the cut-off left: the next save prunes nothing.
    assert (await _save(store, location, retention_days=1))["pruned"] == 0
    # An object already deleted by hand does not stop its row from being pruned.
    _path(recent["uri"]).unlink()
    assert await store.prune("ten_a", "dev_1", utcnow() + timedelta(seconds=1)) == 3
    assert (await store.list("ten_a", "dev_1", 10, 0))[0] == 0
    assert _files(tmp_path / "backups") == [_path(other_device["uri"])]


async def test_file_location_outside_the_roots(runtime: Runtime, tmp_path: Path) -> None:
    store = runtime.backups
    root = tmp_path / "backups"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    # A symlink under the root that leads out of it is outside: paths are resolved.
    (root / "escape").symlink_to(outside, target_is_directory=True)
    for location in (
        "file:///etc/",
        outside.as_uri(),
        f"{root.as_uri()}-sibling/",  # a prefix of the root's name is not the root
        f"{root.as_uri()}/escape/",
        tmp_path.as_uri(),
    ):
        with pytest.raises(PermanentError) as refused:
            await _save(store, location)
        assert refused.value.code == "backup_location_forbidden", location
        assert root.resolve().as_uri() in refused.value.message
    assert _files(root) == _files(outside) == []
    assert (await store.list("ten_a", "dev_1", 10, 0))[0] == 0
    # The root itself is fine.
    saved = await _save(store, root.as_uri())
    assert _path(saved["uri"]).parent.parent.parent == root


async def test_s3_backups(runtime: Runtime, s3_server: S3Server) -> None:  # noqa: F811
    client = s3_server.client()
    try:
        bucket = s3_server.new_bucket(client)
        store = BackupStore(runtime.db, s3_server.settings(runtime.settings))
        location = f"s3://{bucket}/devices/"
        now = utcnow()

        old = await _save(store, location, now=now - timedelta(days=5))
        plain = await _save(store, location, now=now - timedelta(hours=1))
        assert plain["uri"].startswith(f"s3://{bucket}/devices/ten_a/dev_1/")
        key = plain["uri"].removeprefix(f"s3://{bucket}/")
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == CONFIG

        zipped = await _save(store, location, compression=True, retention_days=1, now=now)
        assert zipped["pruned"] == 1
        zkey = zipped["uri"].removeprefix(f"s3://{bucket}/")
        stored = client.get_object(Bucket=bucket, Key=zkey)["Body"].read()
        assert stored.startswith(GZIP_MAGIC) and gzip.decompress(stored) == CONFIG
        assert zipped["stored_size"] == len(stored)

        # The pruned object is gone from the bucket, and only the two others are there.
        listed = client.list_objects_v2(Bucket=bucket, Prefix="devices/")
        assert sorted(o["Key"] for o in listed["Contents"]) == sorted([key, zkey])
        assert old["uri"].removeprefix(f"s3://{bucket}/") not in {key, zkey}

        count, rows = await store.list("ten_a", "dev_1", 10, 0)
        assert count == 2 and [r.id for r in rows] == [zipped["backup_id"], plain["backup_id"]]
        for row in rows:
            assert await store.content(row) == CONFIG

        assert await store.prune("ten_a", "dev_1", now + timedelta(seconds=1)) == 2
        assert client.list_objects_v2(Bucket=bucket, Prefix="devices/")["KeyCount"] == 0
        assert (await store.list("ten_a", "dev_1", 10, 0))[0] == 0

        # A bucket that does not exist: a permanent error, and no row.
        with pytest.raises(PermanentError) as missing:
            await _save(store, f"s3://{bucket}-missing/devices/")
        assert missing.value.code == "backup_store_error"
        assert "NoSuchBucket" in missing.value.message
        assert (await store.list("ten_a", "dev_1", 10, 0))[0] == 0
    finally:
        client.close()


async def test_backups_api(api: Api, tmp_path: Path) -> None:
    headers = await api.auth()
    tenant_id = await ensure_tenant(api.runtime.db, "acme")
    dev_1 = await make_device(api, headers, "gw-1", protocol="ssh")
    dev_2 = await make_device(api, headers, "gw-2", protocol="ssh")
    store = api.runtime.backups
    location = (tmp_path / "backups").as_uri()
    now = utcnow()
    first = await _save(
        store, location, tenant_id=tenant_id, device_id=dev_1["id"], now=now - timedelta(hours=1)
    )
    second = await _save(
        store,
        location,
        tenant_id=tenant_id,
        device_id=dev_1["id"],
        compression=True,
        data=b"second config\n",
        operation_id="op_x",
        now=now,
    )
    theirs = await _save(store, location, tenant_id=tenant_id, device_id=dev_2["id"])

    url = f"{DEVICES}{dev_1['id']}/backups/"
    r = await api.client.get(url, headers=headers)
    assert r.status_code == 200, r.text
    page = r.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 2
    assert [b["id"] for b in page["results"]] == [second["backup_id"], first["backup_id"]]
    newest = page["results"][0]
    assert newest == {
        "id": second["backup_id"],
        "device_id": dev_1["id"],
        "operation_id": "op_x",
        "uri": second["uri"],
        "size": len(b"second config\n"),
        "sha256": hashlib.sha256(b"second config\n").hexdigest(),
        "compressed": True,
        "method": "ssh",
        "created_at": newest["created_at"],
    }
    r = await api.client.get(url, params={"limit": 1}, headers=headers)
    assert [b["id"] for b in r.json()["results"]] == [second["backup_id"]]
    assert r.json()["next"] and r.json()["previous"] is None

    r = await api.client.get(f"{url}{second['backup_id']}/", headers=headers)
    assert r.status_code == 200 and r.json() == newest

    # Download: the configuration as taken, decompressed.
    for saved, data in ((first, CONFIG), (second, b"second config\n")):
        r = await api.client.get(f"{url}{saved['backup_id']}/content", headers=headers)
        assert r.status_code == 200, r.text
        assert r.content == data
        assert r.headers["content-type"] == "application/octet-stream"
        assert r.headers["x-checksum-sha256"] == hashlib.sha256(data).hexdigest()
        assert f"{dev_1['id']}-{saved['backup_id']}.cfg" in r.headers["content-disposition"]

    # Another device's backup id is not found through this device, on every route.
    for path in (f"{theirs['backup_id']}/", f"{theirs['backup_id']}/content"):
        assert_error(await api.client.get(f"{url}{path}", headers=headers), 404)
    assert_error(await api.client.get(f"{url}bk_nope/", headers=headers), 404)
    assert_error(await api.client.get(f"{DEVICES}dev_nope/backups/", headers=headers), 404)
    # Nor is any of it another tenant's.
    other = await api.auth(tenant="globex")
    assert_error(await api.client.get(url, headers=other), 404)
    r = await api.client.get(f"{url}{first['backup_id']}/content", headers=other)
    assert_error(r, 404)
    # Reading backups is devices:read.
    reader = await api.auth(scopes=["devices:read"])
    assert (await api.client.get(url, headers=reader)).status_code == 200
    ops_only = await api.auth(scopes=["operations:read"])
    assert_error(await api.client.get(url, headers=ops_only), 403)

    # An object that no longer matches its checksum is a 503, not wrong bytes.
    _path(first["uri"]).write_bytes(b"tampered")
    r = await api.client.get(f"{url}{first['backup_id']}/content", headers=headers)
    body = assert_error(r, 503)
    assert body["errors"][0]["message"] == "backup_corrupt"


async def test_backup_operation_location_is_checked(api: Api, tmp_path: Path) -> None:
    headers = await api.auth()
    device = await make_device(api, headers, "gw-1", protocol="ssh")

    async def post(location: str) -> Any:
        return await api.client.post(
            OPS,
            json={
                "device_id": device["id"],
                "operation_type": "backup_configuration",
                "parameters": {"backup_location": location, "compression": True},
            },
            headers=headers,
        )

    for location in ("file:///etc/", "file:///var/backupsx/", f"{tmp_path.as_uri()}/other/"):
        body = assert_error(await post(location), 400, {"parameters.backup_location"})
        message = body["errors"][0]["message"]
        assert (tmp_path / "backups").resolve().as_uri() in message, message
        assert "HEADLESS_OPS_BACKUP_FILE_ROOTS" in message
    # Malformed locations are refused by the parameters' own validation.
    for location in (
        "ftp://host/x/",
        "file://host/x/",
        "file:///var/backups/../../etc/",
        "s3:///x",
    ):
        assert_error(await post(location), 400, {"parameters.backup_location"})
    assert (await api.client.get(OPS, headers=headers)).json()["count"] == 0

    for location in (
        f"{(tmp_path / 'backups').as_uri()}/site-a/",
        "file:///var/backups/",
        "s3://some-bucket/devices/",
    ):
        r = await post(location)
        assert r.status_code == 201, r.text
    assert (await api.client.get(OPS, headers=headers)).json()["count"] == 3
