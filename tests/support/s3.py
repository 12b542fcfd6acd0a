"""A real S3-compatible HTTP server for ``s3://`` backup tests: moto in server mode.

:class:`ThreadedMotoServer` runs moto's werkzeug app in a thread of the test process,
listening on a loopback port the OS picks. Clients talk to it over real HTTP with boto3,
exactly as they would to MinIO or AWS; moto does not check credentials, any pair works.
One server serves the whole session, and its state (buckets, objects) lives as long as
it does: give each test its own bucket (:meth:`S3Server.new_bucket`).

Use the fixture by importing it into a test module (``tests/conftest.py`` does not register it)::

    from tests.support.s3 import S3Server, s3_server  # noqa: F401

    def test_x(s3_server: S3Server) -> None:
        ...
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from headless_ops.config import Settings

__all__ = ["S3Server", "s3_server"]

ACCESS_KEY_ID = "test"
SECRET_ACCESS_KEY = "test"
REGION = "us-east-1"

_buckets = itertools.count()


@dataclass(frozen=True, slots=True)
class S3Server:
    """Where the server listens, and ways to reach it."""

    endpoint_url: str
    region: str = REGION
    access_key_id: str = ACCESS_KEY_ID
    secret_access_key: str = SECRET_ACCESS_KEY

    def client(self) -> Any:
        """A boto3 S3 client of the server; close it (``client.close()``) when done."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )

    def settings(self, base: Settings) -> Settings:
        """``base`` with its ``s3_*`` settings pointed at this server."""
        return base.model_copy(
            update={
                "s3_endpoint_url": self.endpoint_url,
                "s3_region": self.region,
                "s3_access_key_id": self.access_key_id,
                "s3_secret_access_key": self.secret_access_key,
            }
        )

    def new_bucket(self, client: Any) -> str:
        """Create a bucket no other test uses; returns its name."""
        # S3 bucket names: 3-63 lowercase letters, digits and hyphens.
        name = f"ho-test-{os.getpid()}-{next(_buckets)}"
        client.create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (an ephemeral port) for the session; stopped at the end."""
    from moto.server import ThreadedMotoServer

    # verbose=False: no werkzeug request log on stderr.
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(endpoint_url=f"http://{host}:{port}")
    finally:
        server.stop()
