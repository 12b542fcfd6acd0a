"""The firmware repository: images uploaded once, addressed by version and product class.

Bytes are streamed to ``<data_dir>/firmware/<tenant>/`` while their SHA-256 is computed;
the row is written only once the file is complete and (when the uploader gave one) the
checksum matches, so a half-uploaded image can never be chosen for a device.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, delete, func, insert, or_, select

from headless_ops.errors import Conflict, FieldError, InvalidInput, NotFound, PayloadTooLarge
from headless_ops.ids import new_sortable_id
from headless_ops.store.db import Database
from headless_ops.store.schema import firmware_images
from headless_ops.timeutil import iso, utcnow

__all__ = ["FirmwareImage", "FirmwareRepository"]

_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~:()-]{0,127}$")
_PRODUCT_CLASS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._+-]{0,63}$")
_FILENAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, slots=True)
class FirmwareImage:
    """One stored image."""

    tenant_id: str
    id: str
    version: str
    product_class: str | None
    filename: str
    size: int
    sha256: str
    description: str | None
    path: Path

    def render(self, created_at: str | None = None) -> dict[str, Any]:
        """The API's JSON of the image."""
        return {
            "id": self.id,
            "version": self.version,
            "product_class": self.product_class,
            "filename": self.filename,
            "size": self.size,
            "sha256": self.sha256,
            "description": self.description,
            "created_at": created_at,
        }


def _check(value: str | None, pattern: re.Pattern[str], field: str, what: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise InvalidInput(f"invalid {field}", [FieldError(field, what)])


class FirmwareRepository:
    """Store, find and serve firmware images of every tenant."""

    def __init__(self, db: Database, root: Path, max_bytes: int) -> None:
        self.db = db
        self.root = root
        self.max_bytes = max_bytes

    def _dir(self, tenant_id: str) -> Path:
        return self.root / tenant_id

    def _image(self, row: Any) -> FirmwareImage:
        return FirmwareImage(
            tenant_id=row.tenant_id,
            id=row.id,
            version=row.version,
            product_class=row.product_class,
            filename=row.filename,
            size=row.size,
            sha256=row.sha256,
            description=row.description,
            path=self._dir(row.tenant_id) / row.id,
        )

    def render(self, row: Any) -> dict[str, Any]:
        """JSON of a row."""
        return self._image(row).render(iso(row.created_at))

    async def add(
        self,
        tenant_id: str,
        *,
        version: str,
        product_class: str | None,
        filename: str | None,
        sha256: str | None,
        description: str | None,
        chunks: AsyncIterator[bytes],
    ) -> Any:
        """Stream an image in; returns its row. 400 on bad fields or checksum, 409 on a
        duplicate version for the same product class, 413 over the size limit."""
        _check(version, _VERSION, "version", "letters, digits and . _ + ~ : ( ) -, at most 128")
        _check(product_class, _PRODUCT_CLASS, "product_class", "at most 64 printable characters")
        _check(filename, _FILENAME, "filename", "letters, digits and . _ + -, at most 255")
        if sha256 is not None:
            sha256 = sha256.lower().removeprefix("sha256:")
            _check(sha256, _SHA256, "sha256", "64 hexadecimal digits")
        if description is not None and len(description) > 4096:
            raise InvalidInput(
                "invalid description", [FieldError("description", "at most 4096 characters")]
            )
        if await self._find_exact(tenant_id, version, product_class) is not None:
            raise Conflict(
                f"firmware {version!r} for product class {product_class or 'any'!r} already exists"
            )
        image_id = new_sortable_id("fw")
        folder = self._dir(tenant_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{image_id}.part"
        digest = hashlib.sha256()
        size = 0
        try:
            with tmp.open("wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLarge(
                            f"a firmware image may be at most {self.max_bytes} bytes"
                        )
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if size == 0:
                raise InvalidInput("empty image", [FieldError("file", "the image is empty")])
            actual = digest.hexdigest()
            if sha256 is not None and actual != sha256:
                raise InvalidInput(
                    "checksum mismatch",
                    [FieldError("sha256", f"the uploaded bytes have SHA-256 {actual}")],
                )
            os.replace(tmp, folder / image_id)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        now = utcnow()
        try:
            async with self.db.write() as conn:
                # Checked again inside the write: two uploads of one version may race. SQLite
                # has one writer at a time; on PostgreSQL two READ COMMITTED transactions
                # would both see no row and both insert (no unique constraint can cover a
                # NULL product_class), so uploads of one version take turns on a lock held
                # until commit — the second then sees the first's row.
                if self.db.dialect == "postgresql":
                    key = f"firmware:{tenant_id}:{version}"
                    await conn.execute(
                        select(func.pg_advisory_xact_lock(func.hashtextextended(key, 0)))
                    )
                if await self._find_exact(tenant_id, version, product_class, conn) is not None:
                    raise Conflict(f"firmware {version!r} for this product class already exists")
                await conn.execute(
                    insert(firmware_images).values(
                        tenant_id=tenant_id,
                        id=image_id,
                        version=version,
                        product_class=product_class,
                        filename=filename or f"firmware-{version}.bin",
                        size=size,
                        sha256=actual,
                        description=description,
                        created_at=now,
                    )
                )
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                (folder / image_id).unlink()
            raise
        return await self.get_row(tenant_id, image_id)

    async def _find_exact(
        self, tenant_id: str, version: str, product_class: str | None, conn: Any = None
    ) -> Any:
        cond = (
            firmware_images.c.product_class.is_(None)
            if product_class is None
            else firmware_images.c.product_class == product_class
        )
        query = select(firmware_images.c.id).where(
            firmware_images.c.tenant_id == tenant_id,
            firmware_images.c.version == version,
            cond,
        )
        if conn is not None:
            return (await conn.execute(query)).first()
        async with self.db.read() as reader:
            return (await reader.execute(query)).first()

    async def get_row(self, tenant_id: str, image_id: str) -> Any:
        """The row of an image; NotFound otherwise."""
        async with self.db.read() as conn:
            row = (
                await conn.execute(
                    select(firmware_images).where(
                        firmware_images.c.tenant_id == tenant_id, firmware_images.c.id == image_id
                    )
                )
            ).first()
        if row is None:
            raise NotFound(f"firmware image {image_id!r} not found")
        return row

    async def get(self, tenant_id: str, image_id: str) -> FirmwareImage:
        """An image by id."""
        return self._image(await self.get_row(tenant_id, image_id))

    async def list(
        self,
        tenant_id: str,
        limit: int,
        offset: int,
        version: str | None = None,
        product_class: str | None = None,
    ) -> tuple[int, list[Any]]:
        """A page of images, newest first."""
        conds = [firmware_images.c.tenant_id == tenant_id]
        if version is not None:
            conds.append(firmware_images.c.version == version)
        if product_class is not None:
            conds.append(firmware_images.c.product_class == product_class)
        async with self.db.read() as conn:
            count = (
                await conn.execute(select(func.count()).select_from(firmware_images).where(*conds))
            ).scalar_one()
            rows = (
                await conn.execute(
                    select(firmware_images)
                    .where(*conds)
                    .order_by(firmware_images.c.id.desc())
                    .limit(limit)
                    .offset(offset)
                )
            ).all()
        return count, list(rows)

    async def delete(self, tenant_id: str, image_id: str) -> None:
        """Remove an image and its bytes."""
        image = await self.get(tenant_id, image_id)
        async with self.db.write() as conn:
            await conn.execute(
                delete(firmware_images).where(
                    firmware_images.c.tenant_id == tenant_id, firmware_images.c.id == image_id
                )
            )
        with contextlib.suppress(FileNotFoundError):
            image.path.unlink()

    async def find(
        self, tenant_id: str, version: str, product_class: str | None
    ) -> FirmwareImage | None:
        """The image to install: ``version`` for the device's product class, else one for any
        product class. ``None`` when the repository has neither."""
        match: Any = firmware_images.c.product_class.is_(None)
        if product_class:
            match = or_(match, firmware_images.c.product_class == product_class)
        async with self.db.read() as conn:
            rows = (
                await conn.execute(
                    select(firmware_images).where(
                        and_(
                            firmware_images.c.tenant_id == tenant_id,
                            firmware_images.c.version == version,
                            match,
                        )
                    )
                )
            ).all()
        if not rows:
            return None
        # A product-class-specific image wins over a generic one.
        return self._image(min(rows, key=lambda r: r.product_class is None))
