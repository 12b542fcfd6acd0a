"""The backup store: configuration backups written to ``file://`` or ``s3://`` locations.

Each backup is one object named ``<prefix>/<tenant>/<device>/<UTC time>-<id>.cfg[.gz]``
and one row (what the API lists). The object is written first — atomically on a file
system (temporary file, fsync, rename) — and the row after, so a listed backup always
exists. Retention prunes a device's backups older than ``retention_days`` after each new
one, wherever each was stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from sqlalchemy import delete, func, insert, select

from headless_ops.config import Settings
from headless_ops.errors import FieldError, InvalidInput, NotFound
from headless_ops.helpers.base import PermanentError, RetryableError
from headless_ops.ids import new_sortable_id
from headless_ops.store.db import Database
from headless_ops.store.schema import backups
from headless_ops.timeutil import iso, utcnow

__all__ = ["BackupStore", "check_location"]


def check_location(location: str, settings: Settings) -> None:
    """400 unless a ``file://`` location is under an allowed root (s3:// is always allowed:
    the bucket's own permissions decide)."""
    parts = urlsplit(location)
    if parts.scheme != "file":
        return
    path = Path(unquote(parts.path)).resolve()
    roots = settings.allowed_backup_roots()
    if not any(path == root or root in path.parents for root in roots):
        raise InvalidInput(
            "backup location not allowed",
            [
                FieldError(
                    "parameters.backup_location",
                    "file:// backups must be under "
                    + ", ".join(r.as_uri() for r in roots)
                    + " (setting HEADLESS_OPS_BACKUP_FILE_ROOTS)",
                )
            ],
        )


@dataclass(frozen=True, slots=True)
class _Object:
    scheme: str
    bucket: str
    key: str  # file: absolute path; s3: object key


def _parse(uri: str) -> _Object:
    parts = urlsplit(uri)
    if parts.scheme == "file":
        return _Object("file", "", unquote(parts.path))
    return _Object("s3", parts.netloc, parts.path.lstrip("/"))


class BackupStore:
    """Write, list, read and prune configuration backups."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.settings = settings
        self._s3: Any = None

    # -- objects -----------------------------------------------------------------------

    def _s3_client(self) -> Any:
        if self._s3 is None:
            import boto3  # imported on first use: most installations never touch S3
            from botocore.config import Config

            kwargs: dict[str, Any] = {
                "region_name": self.settings.s3_region,
                "config": Config(retries={"max_attempts": 3, "mode": "standard"}),
            }
            if self.settings.s3_endpoint_url:
                kwargs["endpoint_url"] = self.settings.s3_endpoint_url
            if self.settings.s3_access_key_id:
                kwargs["aws_access_key_id"] = self.settings.s3_access_key_id
                kwargs["aws_secret_access_key"] = self.settings.s3_secret_access_key
            self._s3 = boto3.client("s3", **kwargs)
        return self._s3

    def _put_sync(self, obj: _Object, data: bytes) -> None:
        if obj.scheme == "file":
            path = Path(obj.key)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.part")
            with tmp.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
            return
        self._s3_client().put_object(Bucket=obj.bucket, Key=obj.key, Body=data)

    def _get_sync(self, obj: _Object) -> bytes:
        if obj.scheme == "file":
            return Path(obj.key).read_bytes()
        response = self._s3_client().get_object(Bucket=obj.bucket, Key=obj.key)
        return bytes(response["Body"].read())

    def _delete_sync(self, obj: _Object) -> None:
        if obj.scheme == "file":
            with contextlib.suppress(FileNotFoundError):
                Path(obj.key).unlink()
            return
        self._s3_client().delete_object(Bucket=obj.bucket, Key=obj.key)

    async def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return await asyncio.to_thread(fn, *args)
        except OSError as exc:
            raise RetryableError("backup_store_error", f"{what}: {exc.strerror or exc}") from None
        except Exception as exc:  # botocore's errors, without importing botocore eagerly
            code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
            message = f"{what}: {type(exc).__name__}: {code or exc}"
            if code in {
                "NoSuchBucket",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
            }:
                raise PermanentError("backup_store_error", message) from None
            raise RetryableError("backup_store_error", message) from None

    def close(self) -> None:
        """Release the S3 client's connections, if one was made."""
        if self._s3 is not None:
            self._s3.close()
            self._s3 = None

    # -- backups -----------------------------------------------------------------------

    async def save(
        self,
        *,
        tenant_id: str,
        device_id: str,
        operation_id: str | None,
        data: bytes,
        location: str,
        compression: bool,
        retention_days: int | None,
        method: str,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Store one backup; returns what the operation's result says about it."""
        now = now or utcnow()
        check_location_or_fail(location, self.settings)
        backup_id = new_sortable_id("bk")
        stored = gzip.compress(data, mtime=0) if compression else data
        name = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{backup_id}.cfg" + (".gz" if compression else "")
        parts = urlsplit(location)
        prefix = parts.path.rstrip("/")
        uri = f"{parts.scheme}://{parts.netloc}{prefix}/{tenant_id}/{device_id}/{name}"
        await self._call("writing the backup", self._put_sync, _parse(uri), stored)
        digest = hashlib.sha256(data).hexdigest()
        async with self.db.write() as conn:
            await conn.execute(
                insert(backups).values(
                    tenant_id=tenant_id,
                    id=backup_id,
                    device_id=device_id,
                    operation_id=operation_id,
                    uri=uri,
                    size=len(data),
                    sha256=digest,
                    compressed=compression,
                    method=method,
                    created_at=now,
                )
            )
        pruned = 0
        if retention_days is not None:
            pruned = await self.prune(tenant_id, device_id, now - timedelta(days=retention_days))
        return {
            "backup_id": backup_id,
            "uri": uri,
            "size": len(data),
            "stored_size": len(stored),
            "sha256": digest,
            "compressed": compression,
            "method": method,
            "pruned": pruned,
        }

    async def prune(self, tenant_id: str, device_id: str, older_than: datetime) -> int:
        """Delete a device's backups taken before ``older_than``; returns how many."""
        cond = (
            (backups.c.tenant_id == tenant_id)
            & (backups.c.device_id == device_id)
            & (backups.c.created_at < older_than)
        )
        async with self.db.read() as conn:
            rows = (await conn.execute(select(backups.c.id, backups.c.uri).where(cond))).all()
        for row in rows:
            await self._call("pruning an old backup", self._delete_sync, _parse(row.uri))
            async with self.db.write() as conn:
                await conn.execute(
                    delete(backups).where(backups.c.tenant_id == tenant_id, backups.c.id == row.id)
                )
        return len(rows)

    async def list(
        self, tenant_id: str, device_id: str, limit: int, offset: int
    ) -> tuple[int, list[Any]]:
        """A page of a device's backups, newest first."""
        cond = (backups.c.tenant_id == tenant_id) & (backups.c.device_id == device_id)
        async with self.db.read() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(backups).where(cond))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(backups)
                    .where(cond)
                    .order_by(backups.c.created_at.desc(), backups.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return count, list(rows)

    async def get(self, tenant_id: str, device_id: str, backup_id: str) -> Any:
        """One backup's row; NotFound otherwise."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(backups).where(
                        backups.c.tenant_id == tenant_id,
                        backups.c.device_id == device_id,
                        backups.c.id == backup_id,
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"backup {backup_id!r} of device {device_id!r} not found")
        return row

    async def content(self, row: Any) -> bytes:
        """The configuration as taken (decompressed), verified against its checksum."""
        stored = await self._call("reading the backup", self._get_sync, _parse(row.uri))
        data = gzip.decompress(stored) if row.compressed else stored
        if hashlib.sha256(data).hexdigest() != row.sha256:
            raise RetryableError("backup_corrupt", f"backup {row.id} does not match its checksum")
        return bytes(data)

    @staticmethod
    def render(row: Any) -> dict[str, Any]:
        """The API's JSON of a backup."""
        return {
            "id": row.id,
            "device_id": row.device_id,
            "operation_id": row.operation_id,
            "uri": row.uri,
            "size": row.size,
            "sha256": row.sha256,
            "compressed": row.compressed,
            "method": row.method,
            "created_at": iso(row.created_at),
        }


def check_location_or_fail(location: str, settings: Settings) -> None:
    """:func:`check_location` for a helper: a permanent operation error instead of a 400."""
    try:
        check_location(location, settings)
    except InvalidInput as exc:
        detail = exc.errors[0].message if exc.errors else str(exc)
        raise PermanentError("backup_location_forbidden", detail) from None
