"""Configuration from ``HEADLESS_OPS_*`` environment variables, each with a documented default."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from headless_ops.domain.retry import RetryPolicy

__all__ = ["Settings"]


class Settings(BaseSettings):
    """Every setting of the server; ``HEADLESS_OPS_<NAME>`` in the environment overrides it."""

    model_config = SettingsConfigDict(env_prefix="HEADLESS_OPS_", extra="ignore")

    #: Where the embedded SQLite database, keys and files live.
    data_dir: Path = Path("data")
    #: SQLAlchemy URL; empty means SQLite at ``<data_dir>/headless-ops.db``.
    #: PostgreSQL: ``postgresql+psycopg://user:pass@host/db`` (``postgresql://`` is accepted).
    database_url: str = ""
    #: SQLite ``synchronous`` pragma: FULL survives power loss, NORMAL only process crashes.
    sqlite_synchronous: str = Field(default="FULL", pattern="^(?i:OFF|NORMAL|FULL|EXTRA)$")
    #: SQLite ``busy_timeout`` in milliseconds (other processes holding the write lock).
    sqlite_busy_timeout_ms: int = 10_000
    #: Connections kept by the PostgreSQL pool of one process.
    pg_pool_size: int = 10

    host: str = "127.0.0.1"
    port: int = 8080
    #: Largest request body accepted, in bytes (413 above it).
    max_body_bytes: int = 1024 * 1024

    #: Fernet keys (urlsafe base64, comma-separated). The first encrypts; all decrypt, so a
    #: new key can be put in front and the old one kept until everything is re-encrypted.
    #: Empty: a key is generated once into ``<data_dir>/secret.key``.
    secret_keys: str = ""
    #: Key of the HMAC that stores API token secrets. Empty: generated into the data dir.
    token_hash_key: str = ""

    #: How long an Idempotency-Key is remembered, in hours (at least 24).
    idempotency_ttl_hours: int = Field(default=48, ge=24)

    #: ``update_status=true``: most devices refreshed at once, and the time bound of the refresh.
    status_refresh_concurrency: int = Field(default=32, ge=1)
    status_refresh_timeout_s: float = Field(default=5.0, gt=0)

    #: Default ``max_attempts`` of an operation that does not say.
    default_max_attempts: int = Field(default=3, ge=1, le=100)

    # --- scheduler -------------------------------------------------------------------
    #: Identity of this worker in leases (default: host:pid:random).
    worker_id: str = ""
    #: Operations claimed per statement, and most running at once in one worker process.
    claim_batch_size: int = Field(default=512, ge=1, le=10_000)
    max_in_flight: int = Field(default=2000, ge=1)
    #: Operations due within this many seconds are claimed now and started by a timer at
    #: their time: the claim (and its commit) happens before, not after, the due moment.
    #: (100 ms: a claim on PostgreSQL sometimes takes longer than 50 ms; with 50 ms its
    #: lateness p99 was 28-52 ms, with 100 ms 5-16 ms.)
    claim_ahead_s: float = Field(default=0.1, ge=0, le=5)
    #: A running operation's lease; renewed every third of it.
    lease_ttl_s: float = Field(default=30.0, gt=0)
    #: Backstop poll when nothing wakes the loop (new operations in another process on SQLite).
    safety_poll_s: float = Field(default=2.0, gt=0)
    #: Retry backoff: base * factor**(attempt-1), capped, times a jitter in [1-jitter, 1].
    retry_base_s: float = Field(default=5.0, ge=0)
    retry_factor: float = Field(default=2.0, ge=1)
    retry_cap_s: float = Field(default=1800.0, ge=0)
    retry_jitter: float = Field(default=0.5, ge=0, le=1)
    #: Execution timeout per operation type, seconds (JSON object); others get the default.
    operation_timeouts: dict[str, float] = Field(
        default_factory=lambda: {
            "firmware_update": 3600.0,
            "backup_configuration": 900.0,
            "configuration_sync": 900.0,
            "reboot": 900.0,
            "factory_reset": 900.0,
        }
    )
    default_operation_timeout_s: float = Field(default=300.0, gt=0)
    #: No operation starts with less than this left in its maintenance window.
    window_margin_s: float = Field(default=300.0, ge=0)
    #: Limits (0 or absent: none). Waiting for a limit is ``pending``, never a failure.
    max_running: int = Field(default=0, ge=0)
    max_running_per_type: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    #: Per label key: at most N running for each distinct value (e.g. {"site": 10}).
    max_running_per_label: dict[str, Annotated[int, Field(ge=0)]] = Field(default_factory=dict)
    max_starts_per_minute: int = Field(default=0, ge=0)
    #: On SIGTERM: how long running operations may finish before their leases are released.
    shutdown_grace_s: float = Field(default=30.0, ge=0)

    #: Firmware images: largest accepted upload.
    firmware_max_bytes: int = Field(default=2 * 1024**3, ge=1)
    #: Local folders ``file://`` backup locations may be under (empty: ``<data_dir>/backups``):
    #: the API must not become a way to write anywhere the server can.
    backup_file_roots: list[Path] = Field(default_factory=list)
    #: S3-compatible store for ``s3://`` backup locations; empty endpoint: AWS itself.
    #: Credentials come from the standard AWS chain (environment, ~/.aws, instance role)
    #: unless given here.
    s3_endpoint_url: str = ""
    s3_region: str = "us-east-1"
    s3_access_key_id: str = ""
    s3_secret_access_key: str = Field(default="", repr=False)

    #: SSH helper: open connections across all devices, timeouts, keepalive, and how long an
    #: idle connection is kept for the next operation on the same device (0: never reused).
    ssh_max_connections: int = Field(default=100, ge=1)
    ssh_connect_timeout_s: float = Field(default=15.0, gt=0)
    ssh_command_timeout_s: float = Field(default=120.0, gt=0)
    ssh_keepalive_s: float = Field(default=15.0, ge=0)
    ssh_idle_s: float = Field(default=30.0, ge=0)
    #: After a reboot: how long to wait for the device to come back, and how often to try.
    ssh_reboot_wait_s: float = Field(default=600.0, gt=0)
    ssh_reboot_poll_s: float = Field(default=5.0, gt=0)

    #: TR-069 ACS (the cwmp helper): its own listener, where CPEs connect.
    cwmp_enabled: bool = True
    cwmp_host: str = "127.0.0.1"
    cwmp_port: int = Field(default=7547, ge=0, le=65535)
    cwmp_path: str = "/"
    #: How CPEs reach the ACS, for the URLs of downloads and uploads (empty: from host/port).
    cwmp_public_url: str = ""
    #: HTTPS when both are given (then Basic auth is offered; Digest on plain HTTP).
    cwmp_tls_cert: Path | None = None
    cwmp_tls_key: Path | None = None
    #: An unknown CPE is registered into the inventory (of ``cwmp_tenant``), or refused.
    cwmp_auto_register: bool = True
    cwmp_tenant: str = "default"
    #: New CPEs auto-registered per minute at most, per ACS process (0: no limit, the
    #: default, so that a fleet moving to this ACS is never slowed). With no shared
    #: credentials, anyone who reaches the ACS port can register devices: this bounds how
    #: fast. Over it, the Inform is answered 503 with Retry-After (CPEs retry).
    cwmp_register_per_minute: int = Field(default=0, ge=0)
    #: Shared CPE credentials (per-device ones are the device's cpe_username/cpe_password);
    #: when neither is set for a CPE, it is not challenged.
    cwmp_username: str = ""
    cwmp_password: str = Field(default="", repr=False)
    cwmp_auth: Literal["auto", "basic", "digest"] = "auto"
    #: Session inactivity timeout; largest envelope accepted.
    cwmp_session_timeout_s: float = Field(default=30.0, gt=0)
    cwmp_max_envelope_bytes: int = Field(default=1024 * 1024, ge=32768)
    #: Connection requests: timeout; how long to wait for the session that should follow;
    #: when an unreachable CPE's waiting operations are tried again at the latest.
    cwmp_connection_request_timeout_s: float = Field(default=3.0, gt=0)
    cwmp_session_wait_s: float = Field(default=30.0, gt=0)
    cwmp_recheck_s: float = Field(default=300.0, gt=0)
    #: Connection requests in flight at once (a thousand due together must not all knock
    #: at the same instant).
    cwmp_max_connection_requests: int = Field(default=50, ge=1)
    #: Waiting for a TransferComplete after a Download/Upload, and for the BOOT after a
    #: Reboot or FactoryReset.
    cwmp_transfer_timeout_s: float = Field(default=3600.0, gt=0)
    cwmp_boot_timeout_s: float = Field(default=600.0, gt=0)
    #: After a session's last operation, how long it stays open for another that falls due.
    cwmp_session_linger_s: float = Field(default=0.3, ge=0)
    #: Periodic status refresh: a CPE not heard from for this long is asked to connect (a
    #: connection request), and marked offline with the reason when it does not (0: off).
    cwmp_status_refresh_s: float = Field(default=3600.0, ge=0)
    #: Give each CPE connection-request credentials of its own at first contact (and after
    #: a factory reset), kept sealed in the inventory.
    cwmp_provision_connection_request: bool = True
    #: Sessions at once in one ACS process (beyond: 503 with Retry-After).
    cwmp_max_sessions: int = Field(default=10000, ge=1)

    #: Extra helpers to load, ``module:attribute`` separated by commas (besides entry points).
    helpers: str = ""

    #: Log level and format (``console`` for people, ``json`` for machines).
    log_level: str = "INFO"
    log_format: str = "console"

    @cached_property
    def effective_database_url(self) -> str:
        """The URL actually used: SQLite in the data dir unless one was given."""
        url = self.database_url.strip()
        if not url:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'headless-ops.db').resolve()}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url[len("sqlite:///") :]
        return url

    @property
    def firmware_dir(self) -> Path:
        """Where uploaded firmware images are kept."""
        return self.data_dir / "firmware"

    @property
    def profiles_dir(self) -> Path:
        """Where users add or override SSH platform profiles (``*.yaml``)."""
        return self.data_dir / "ssh_profiles"

    def allowed_backup_roots(self) -> list[Path]:
        """Resolved folders ``file://`` backups may be written under."""
        roots = self.backup_file_roots or [self.data_dir / "backups"]
        return [r.resolve() for r in roots]

    @property
    def cwmp_base_url(self) -> str:
        """The ACS's URL as CPEs reach it (downloads and uploads are under it)."""
        if self.cwmp_public_url:
            return self.cwmp_public_url.rstrip("/")
        scheme = "https" if self.cwmp_tls_cert and self.cwmp_tls_key else "http"
        host = "127.0.0.1" if self.cwmp_host in ("0.0.0.0", "::", "") else self.cwmp_host
        return f"{scheme}://{host}:{self.cwmp_port}"

    def retry_policy(self) -> RetryPolicy:
        """The retry policy these settings describe."""
        return RetryPolicy(
            base=timedelta(seconds=self.retry_base_s),
            factor=self.retry_factor,
            cap=timedelta(seconds=self.retry_cap_s),
            jitter=self.retry_jitter,
        )

    def operation_timeout(self, operation_type: str) -> float:
        """Seconds one attempt of ``operation_type`` may take."""
        return float(self.operation_timeouts.get(operation_type, self.default_operation_timeout_s))

    @property
    def is_sqlite(self) -> bool:
        """True when the store is the embedded SQLite engine."""
        return self.effective_database_url.startswith("sqlite")
