"""The firmware repository ``/api/v1/firmware/`` through the real server, on both engines.

Covers upload (multipart and a raw ``application/octet-stream`` body with query parameters),
the SHA-256 check, refused uploads (empty, no version, duplicate, wrong media type, over the
size limit — and that none of them leaves a file or a row behind), the list with filters and
pagination, download of the exact bytes, delete, tenant isolation and scopes; and
:meth:`FirmwareRepository.find`, which picks the image a device gets.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import pytest
import uvicorn

from headless_ops.api.app import create_app
from headless_ops.api.limits import MULTIPART_SLACK
from headless_ops.api.runtime import Runtime
from headless_ops.artifacts.firmware import FirmwareRepository
from headless_ops.config import Settings
from headless_ops.crypto import load_keys
from headless_ops.errors import Conflict, InvalidInput, PayloadTooLarge
from headless_ops.helpers.registry import HelperRegistry
from headless_ops.store.db import Database
from tests.conftest import Api
from tests.support.api_helpers import assert_error

FIRMWARE = "/api/v1/firmware/"
# Not valid UTF-8 and with every byte value: the download must be the bytes, not a text.
IMAGE = bytes(range(256)) * 37 + b"\x00\xff tail"
IMAGE_SHA = hashlib.sha256(IMAGE).hexdigest()


def _files_on_disk(root: Path) -> list[Path]:
    """Every file under ``root`` (temporary ``.part`` files included)."""
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


async def _upload(
    api: Api,
    headers: dict[str, str],
    version: str,
    data: bytes = IMAGE,
    **fields: str,
) -> httpx2.Response:
    """A multipart upload of ``data`` with ``version`` and ``fields``."""
    return await api.client.post(
        FIRMWARE,
        files={"file": ("image.bin", data, "application/octet-stream")},
        data={"version": version, **fields},
        headers=headers,
    )


async def _chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_multipart_upload_read_download_delete(api: Api) -> None:
    headers = await api.auth()
    r = await _upload(
        api,
        headers,
        "2.1.3",
        product_class="BM632w",
        sha256=IMAGE_SHA.upper(),  # hex case does not matter
        description="stable branch",
    )
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["version"] == "2.1.3"
    assert image["product_class"] == "BM632w"
    assert image["filename"] == "image.bin"  # the part's file name when no field says
    assert image["size"] == len(IMAGE)
    assert image["sha256"] == IMAGE_SHA
    assert image["description"] == "stable branch"
    assert image["id"].startswith("fw") and image["created_at"]
    assert r.headers["location"] == f"{api.base_url}{FIRMWARE}{image['id']}/"

    r = await api.client.get(r.headers["location"], headers=headers)
    assert r.status_code == 200
    assert r.json() == image

    r = await api.client.get(f"{FIRMWARE}{image['id']}/content", headers=headers)
    assert r.status_code == 200
    assert r.content == IMAGE
    assert r.headers["content-type"] == "application/octet-stream"
    assert r.headers["x-checksum-sha256"] == IMAGE_SHA
    assert "image.bin" in r.headers["content-disposition"]

    # The bytes are in the firmware dir (a folder per tenant), named by id, and nothing
    # else is (no .part left).
    firmware_dir = api.runtime.settings.firmware_dir
    [stored] = _files_on_disk(firmware_dir)
    assert stored.name == image["id"] and stored.parent.parent == firmware_dir
    assert stored.read_bytes() == IMAGE

    r = await api.client.delete(f"{FIRMWARE}{image['id']}/", headers=headers)
    assert r.status_code == 204, r.text
    assert not stored.exists()
    assert _files_on_disk(firmware_dir) == []
    assert_error(await api.client.get(f"{FIRMWARE}{image['id']}/", headers=headers), 404)
    assert_error(await api.client.get(f"{FIRMWARE}{image['id']}/content", headers=headers), 404)
    assert_error(await api.client.delete(f"{FIRMWARE}{image['id']}/", headers=headers), 404)


async def test_octet_stream_upload_with_query_parameters(api: Api) -> None:
    headers = await api.auth()
    params = {
        "version": "3.0.0-rc1",
        "product_class": "BM632w",
        "filename": "bm632w-3.0.0.img",
        "sha256": f"sha256:{IMAGE_SHA}",  # the prefixed form is accepted too
    }
    r = await api.client.post(
        FIRMWARE,
        params=params,
        content=IMAGE,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    image = r.json()
    assert image["filename"] == "bm632w-3.0.0.img"
    assert image["sha256"] == IMAGE_SHA and image["size"] == len(IMAGE)
    assert image["description"] is None

    # A streamed body (chunked, no Content-Length) arrives whole.
    r = await api.client.post(
        FIRMWARE,
        params={"version": "3.0.1"},
        content=_chunks([IMAGE[:1000], IMAGE[1000:5000], IMAGE[5000:]]),
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    streamed = r.json()
    assert streamed["sha256"] == IMAGE_SHA and streamed["product_class"] is None
    assert streamed["filename"] == "firmware-3.0.1.bin"  # the default name
    r = await api.client.get(f"{FIRMWARE}{streamed['id']}/content", headers=headers)
    assert r.content == IMAGE


async def test_images_larger_than_the_api_body_limit(api: Api) -> None:
    """Firmware has its own limit (firmware_max_bytes), far above max_body_bytes."""
    headers = await api.auth()
    big = os.urandom(api.runtime.settings.max_body_bytes * 2 + 12345)
    digest = hashlib.sha256(big).hexdigest()
    r = await _upload(api, headers, "9.0", data=big, sha256=digest)
    assert r.status_code == 201, r.text
    r = await api.client.post(
        FIRMWARE,
        params={"version": "9.1", "sha256": digest},
        content=big,
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert r.status_code == 201, r.text
    for image in (await api.client.get(FIRMWARE, headers=headers)).json()["results"]:
        assert image["size"] == len(big) and image["sha256"] == digest
        r = await api.client.get(f"{FIRMWARE}{image['id']}/content", headers=headers)
        assert r.content == big


async def test_refused_uploads_leave_nothing_behind(api: Api) -> None:
    headers = await api.auth()
    octet = {**headers, "Content-Type": "application/octet-stream"}

    # A checksum that does not match the bytes names the field and the actual digest.
    body = assert_error(await _upload(api, headers, "1.0", sha256="0" * 64), 400, {"sha256"})
    assert IMAGE_SHA in body["errors"][0]["message"]
    r = await api.client.post(
        FIRMWARE, params={"version": "1.0", "sha256": "ab" * 32}, content=IMAGE, headers=octet
    )
    assert_error(r, 400, {"sha256"})
    # Not a checksum at all.
    assert_error(await _upload(api, headers, "1.0", sha256="xyz"), 400, {"sha256"})

    # Empty image, by either form.
    assert_error(await _upload(api, headers, "1.0", data=b""), 400, {"file"})
    r = await api.client.post(FIRMWARE, params={"version": "1.0"}, content=b"", headers=octet)
    assert_error(r, 400, {"file"})

    # Missing or invalid version.
    r = await api.client.post(
        FIRMWARE, files={"file": ("image.bin", IMAGE)}, data={}, headers=headers
    )
    assert_error(r, 400, {"version"})
    assert_error(await api.client.post(FIRMWARE, content=IMAGE, headers=octet), 400, {"version"})
    assert_error(await _upload(api, headers, "../../etc/passwd"), 400, {"version"})
    assert_error(await _upload(api, headers, "1.0", filename="../x.bin"), 400, {"filename"})

    # No file part.
    r = await api.client.post(
        FIRMWARE, files={"other": ("x.bin", b"x")}, data={"version": "1.0"}, headers=headers
    )
    assert_error(r, 400, {"file"})

    # JSON (or no body type at all) is not an upload.
    r = await api.client.post(FIRMWARE, json={"version": "1.0"}, headers=headers)
    assert_error(r, 415)
    r = await api.client.post(
        FIRMWARE, content=b"x", headers={**headers, "Content-Type": "text/plain"}
    )
    assert_error(r, 415)

    r = await api.client.get(FIRMWARE, headers=headers)
    assert r.json()["count"] == 0
    assert _files_on_disk(api.runtime.settings.firmware_dir) == []


async def test_duplicates(api: Api) -> None:
    headers = await api.auth()
    assert (await _upload(api, headers, "2.0", product_class="BM632w")).status_code == 201
    # The same version for another product class, or for any product class, is another image.
    assert (await _upload(api, headers, "2.0", product_class="AX3000")).status_code == 201
    assert (await _upload(api, headers, "2.0")).status_code == 201

    body = assert_error(await _upload(api, headers, "2.0", product_class="BM632w"), 409)
    assert "2.0" in body["detail"]
    assert_error(await _upload(api, headers, "2.0"), 409)
    r = await api.client.post(
        FIRMWARE,
        params={"version": "2.0", "product_class": "AX3000"},
        content=b"other bytes",
        headers={**headers, "Content-Type": "application/octet-stream"},
    )
    assert_error(r, 409)

    r = await api.client.get(FIRMWARE, headers=headers)
    assert r.json()["count"] == 3
    # Each stored image has its file, and the refused ones left none.
    assert len(_files_on_disk(api.runtime.settings.firmware_dir)) == 3


async def test_concurrent_duplicate_uploads(api: Api) -> None:
    """Uploads of one version racing each other: one wins, the others are 409 — on
    PostgreSQL too, where both transactions would otherwise see no row and insert."""
    headers = await api.auth()
    for product_class in (None, "BM632w"):
        fields = {"product_class": product_class} if product_class else {}
        for _ in range(3):
            responses = await asyncio.gather(
                *(_upload(api, headers, "5.0", data=bytes([i]) * 100, **fields) for i in range(4))
            )
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [201, 409, 409, 409], [r.text for r in responses]
            r = await api.client.get(FIRMWARE, params={"version": "5.0", **fields}, headers=headers)
            rows = [i for i in r.json()["results"] if i["product_class"] == product_class]
            assert len(rows) == 1, rows
            assert len(_files_on_disk(api.runtime.settings.firmware_dir)) == 1
            r = await api.client.delete(f"{FIRMWARE}{rows[0]['id']}/", headers=headers)
            assert r.status_code == 204


async def test_list_filters_and_pagination(api: Api) -> None:
    headers = await api.auth()
    ids = []
    for version, product_class in (
        ("1.0", "BM632w"),
        ("1.1", "BM632w"),
        ("1.1", "AX3000"),
        ("1.1", None),
        ("2.0", "AX3000"),
    ):
        fields = {"product_class": product_class} if product_class else {}
        r = await _upload(api, headers, version, data=version.encode() * 10, **fields)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])

    r = await api.client.get(FIRMWARE, headers=headers)
    assert r.status_code == 200
    page = r.json()
    assert set(page) == {"count", "next", "previous", "results"}
    assert page["count"] == 5
    # Newest first.
    assert [i["id"] for i in page["results"]] == ids[::-1]

    async def listed(**params: Any) -> list[str]:
        r = await api.client.get(FIRMWARE, params=params, headers=headers)
        assert r.status_code == 200, r.text
        return [i["id"] for i in r.json()["results"]]

    assert await listed(version="1.1") == [ids[3], ids[2], ids[1]]
    assert await listed(product_class="AX3000") == [ids[4], ids[2]]
    assert await listed(version="1.1", product_class="BM632w") == [ids[1]]
    assert await listed(version="9.9") == []

    r = await api.client.get(FIRMWARE, params={"limit": 2}, headers=headers)
    first = r.json()
    assert [i["id"] for i in first["results"]] == [ids[4], ids[3]]
    assert first["previous"] is None and first["next"]
    second = (await api.client.get(first["next"], headers=headers)).json()
    assert [i["id"] for i in second["results"]] == [ids[2], ids[1]]
    third = (await api.client.get(second["next"], headers=headers)).json()
    assert [i["id"] for i in third["results"]] == [ids[0]]
    assert third["next"] is None and third["previous"]

    assert_error(await api.client.get(FIRMWARE, params={"limit": 0}, headers=headers), 400)
    assert_error(await api.client.get(FIRMWARE, params={"offset": -1}, headers=headers), 400)


async def test_tenant_isolation_and_scopes(api: Api) -> None:
    a, b = await api.auth(tenant="tenant-a"), await api.auth(tenant="tenant-b")
    r = await _upload(api, a, "1.0", product_class="BM632w")
    assert r.status_code == 201
    image_id = r.json()["id"]

    # B neither sees nor touches A's image: 404, never 403.
    assert (await api.client.get(FIRMWARE, headers=b)).json()["count"] == 0
    assert_error(await api.client.get(f"{FIRMWARE}{image_id}/", headers=b), 404)
    assert_error(await api.client.get(f"{FIRMWARE}{image_id}/content", headers=b), 404)
    assert_error(await api.client.delete(f"{FIRMWARE}{image_id}/", headers=b), 404)
    # Versions are per tenant: B may upload the same one.
    assert (await _upload(api, b, "1.0", product_class="BM632w")).status_code == 201
    assert (await api.client.get(f"{FIRMWARE}{image_id}/content", headers=a)).content == IMAGE

    reader = await api.auth(tenant="tenant-a", scopes=["devices:read"])
    assert (await api.client.get(f"{FIRMWARE}{image_id}/", headers=reader)).status_code == 200
    assert (await api.client.get(f"{FIRMWARE}{image_id}/content", headers=reader)).status_code == (
        200
    )
    assert_error(await _upload(api, reader, "1.1"), 403)
    assert_error(await api.client.delete(f"{FIRMWARE}{image_id}/", headers=reader), 403)
    ops_only = await api.auth(tenant="tenant-a", scopes=["operations:read"])
    assert_error(await api.client.get(FIRMWARE, headers=ops_only), 403)
    assert_error(await api.client.get(FIRMWARE), 401)
    assert (await api.client.get(f"{FIRMWARE}{image_id}/", headers=a)).status_code == 200


@asynccontextmanager
async def _serve(settings: Settings) -> AsyncIterator[Api]:
    """Another server, on its own runtime built from ``settings`` (as the ``api`` fixture)."""
    box, hasher = load_keys(settings)
    runtime = Runtime(settings, Database(settings), box, hasher, HelperRegistry())
    try:
        app = create_app(runtime, close_runtime=False)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="on")
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.01)
            port = server.servers[0].sockets[0].getsockname()[1]
            base = f"http://127.0.0.1:{port}"
            async with httpx2.AsyncClient(base_url=base, timeout=30) as client:
                yield Api(runtime, base, client)
        finally:
            server.should_exit = True
            await task
    finally:
        await runtime.close()


async def _refused_by_headers(api: Api, request: httpx2.Request) -> tuple[int, dict[str, Any]]:
    """Send only the head of ``request`` (its Content-Length included) and read the answer.

    The server answers 413 from the Content-Length alone and closes the connection without
    reading the body. A client that goes on writing the body (httpx2 writes a multipart one
    after the head, in pieces) writes to a closed socket, the kernel answers with a reset,
    and the reset can discard the 413 before the client reads it: a ReadError, not a
    response. A real client would send ``Expect: 100-continue``; here the body is never sent.
    """
    assert int(request.headers["content-length"]) > 0
    reader, writer = await asyncio.open_connection(request.url.host, request.url.port)
    try:
        head = f"{request.method} {request.url.raw_path.decode()} HTTP/1.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in request.headers.items()
        )
        writer.write(head.encode() + b"\r\n")
        await writer.drain()
        # The server closes the connection after its answer: read to the end.
        response = await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()
    status_line, _, rest = response.partition(b"\r\n")
    _, _, body = rest.partition(b"\r\n\r\n")
    answer: dict[str, Any] = json.loads(body)
    return int(status_line.split()[1]), answer


async def test_size_limit(settings: Settings) -> None:
    limit = 4096
    small = settings.model_copy(update={"firmware_max_bytes": limit})
    async with _serve(small) as api:
        headers = await api.auth()
        octet = {**headers, "Content-Type": "application/octet-stream"}

        # Declared too large (Content-Length), multipart or raw: refused before the body.
        # A multipart body may carry its envelope (MULTIPART_SLACK) above the limit.
        for request in (
            api.client.build_request(
                "POST",
                FIRMWARE,
                files={"file": ("image.bin", b"x" * (limit + MULTIPART_SLACK + 1))},
                data={"version": "1.0"},
                headers=headers,
            ),
            api.client.build_request(
                "POST",
                FIRMWARE,
                params={"version": "1.0"},
                content=b"x" * (limit + 1),
                headers=octet,
            ),
        ):
            status, answer = await _refused_by_headers(api, request)
            assert status == 413, answer
            assert "larger than" in answer["detail"]
        # A multipart file of one byte over the limit, within the envelope's slack: the
        # route refuses it, naming the image's limit, and keeps nothing.
        r = await api.client.post(
            FIRMWARE,
            files={"file": ("image.bin", b"x" * (limit + 1))},
            data={"version": "1.0"},
            headers=headers,
        )
        assert_error(r, 413)
        assert f"at most {limit} bytes" in r.json()["detail"]
        # Found too large while streaming (no Content-Length to refuse it by).
        r = await api.client.post(
            FIRMWARE,
            params={"version": "1.0"},
            content=_chunks([b"x" * 1024] * 5),
            headers=octet,
        )
        assert_error(r, 413)

        assert (await api.client.get(FIRMWARE, headers=headers)).json()["count"] == 0
        assert _files_on_disk(small.firmware_dir) == []

        # Exactly the limit is fine.
        r = await api.client.post(
            FIRMWARE, params={"version": "1.0"}, content=b"y" * limit, headers=octet
        )
        assert r.status_code == 201, r.text
        assert r.json()["size"] == limit
        # As multipart too (its envelope on top of the image).
        r = await api.client.post(
            FIRMWARE,
            files={"file": ("image.bin", b"z" * limit)},
            data={"version": "1.1"},
            headers=headers,
        )
        assert r.status_code == 201, r.text
        assert r.json()["size"] == limit


async def test_repository_add_limits_and_cleanup(runtime: Runtime, tmp_path: Path) -> None:
    root = tmp_path / "fw"
    repo = FirmwareRepository(runtime.db, root, max_bytes=10)

    async def add(version: str, parts: list[bytes], sha256: str | None = None) -> Any:
        return await repo.add(
            "acme",
            version=version,
            product_class=None,
            filename=None,
            sha256=sha256,
            description=None,
            chunks=_chunks(parts),
        )

    # Over the limit in the second chunk: refused while streaming, the partial file removed.
    with pytest.raises(PayloadTooLarge):
        await add("1.0", [b"12345", b"678901"])
    assert _files_on_disk(root) == []
    with pytest.raises(InvalidInput) as bad_sum:
        await add("1.0", [b"abc"], sha256=hashlib.sha256(b"abd").hexdigest())
    assert [e.field for e in bad_sum.value.errors] == ["sha256"]
    assert _files_on_disk(root) == []
    assert (await repo.list("acme", 10, 0))[0] == 0

    row = await add("1.0", [b"12345", b"67890"], sha256=hashlib.sha256(b"1234567890").hexdigest())
    assert row.size == 10
    assert (root / "acme" / row.id).read_bytes() == b"1234567890"
    with pytest.raises(Conflict):
        await add("1.0", [b"z"])
    assert _files_on_disk(root) == [root / "acme" / row.id]
    assert not any(name.startswith(".") for name in os.listdir(root / "acme"))


async def test_find_prefers_the_product_class(runtime: Runtime) -> None:
    repo = runtime.firmware

    async def add(
        version: str, product_class: str | None, data: bytes, tenant: str = "acme"
    ) -> Any:
        return await repo.add(
            tenant,
            version=version,
            product_class=product_class,
            filename=None,
            sha256=None,
            description=None,
            chunks=_chunks([data]),
        )

    generic = await add("2.0", None, b"generic")
    specific = await add("2.0", "BM632w", b"specific")
    other = await add("2.0", "AX3000", b"other")
    only_generic = await add("2.1", None, b"generic 2.1")
    await add("3.0", "AX3000", b"ax only")
    await add("4.0", "BM632w", b"another tenant's", tenant="globex")

    found = await repo.find("acme", "2.0", "BM632w")
    assert found is not None and found.id == specific.id
    assert found.path.read_bytes() == b"specific"
    assert found.sha256 == hashlib.sha256(b"specific").hexdigest()
    found = await repo.find("acme", "2.0", "AX3000")
    assert found is not None and found.id == other.id
    # A product class with no image of its own gets the generic one; so does a device
    # that does not say its product class.
    found = await repo.find("acme", "2.0", "ZZ9")
    assert found is not None and found.id == generic.id
    found = await repo.find("acme", "2.0", None)
    assert found is not None and found.id == generic.id
    found = await repo.find("acme", "2.1", "BM632w")
    assert found is not None and found.id == only_generic.id

    # Absent: no such version, or only another product class's image, or another tenant's.
    assert await repo.find("acme", "9.9", "BM632w") is None
    assert await repo.find("acme", "3.0", "BM632w") is None
    assert await repo.find("acme", "3.0", None) is None
    assert await repo.find("acme", "4.0", "BM632w") is None


async def test_a_client_file_name_is_made_fit_for_a_device_path(api: Api) -> None:
    headers = await api.auth()
    r = await api.client.post(
        "/api/v1/firmware/",
        files={"file": ("C:\\images\\my image (v2).bin", b"VERSION=9\n")},
        data={"version": "9.0"},
        headers=headers,
    )
    assert r.status_code == 201, r.text
    assert r.json()["filename"] == "my_image__v2_.bin"
    # An explicit filename field stays strict: it is refused, not rewritten.
    r = await api.client.post(
        "/api/v1/firmware/",
        files={"file": ("x.bin", b"VERSION=9\n")},
        data={"version": "9.1", "filename": "../x.bin"},
        headers=headers,
    )
    assert r.status_code == 400 and r.json()["errors"][0]["field"] == "filename"
