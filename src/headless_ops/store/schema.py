"""Tables. Alembic migrations build exactly this (a test compares the two)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from headless_ops.store.types import JsonType, UtcDateTime, json_text

__all__ = [
    "api_tokens",
    "backups",
    "config_templates",
    "cwmp_devices",
    "cwmp_jobs",
    "devices",
    "firmware_images",
    "idempotency_keys",
    "maintenance_windows",
    "metadata",
    "operation_events",
    "operations",
    "tenants",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("created_at", UtcDateTime(), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(128), nullable=False),
    # HMAC-SHA256(token_hash_key, secret), hex: the secret itself is never stored.
    Column("secret_hash", String(64), nullable=False),
    # Space-separated scope names.
    Column("scopes", String(512), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
)

devices = Table(
    "devices",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(80), nullable=False),
    Column("name", String(128), nullable=False),
    Column("protocol", String(16), nullable=False),
    # Non-secret connection fields.
    Column("connection", JsonType, nullable=False),
    # Fernet token of the JSON of the secret connection fields (write-only in the API).
    Column("secrets", Text, nullable=True),
    Column("labels", JsonType, nullable=False),
    Column("maintenance_window", String(128), nullable=True),
    Column("status", String(16), nullable=False),
    Column("status_detail", String(512), nullable=True),
    Column("last_seen_at", UtcDateTime(), nullable=True),
    Column("firmware_version", String(128), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    UniqueConstraint("tenant_id", "name"),
)

#: A CPE's serial number as its device's connection holds it: the key by which a CPE that
#: informs for the first time finds the inventory device registered for it beforehand.
device_serial = json_text(devices.c.connection, "serial_number")
# An expression index (json_extract on SQLite, ->> on PostgreSQL): without it, every new CPE
# of a fleet registered ahead scanned all the devices still waiting for their CPE.
Index("ix_devices_cwmp_serial", device_serial)

_WAITING = text("status IN ('scheduled', 'pending')")
_RUNNING = text("status = 'running'")
_DEFERRED = text("status = 'pending' AND wait_reason = 'device_unreachable'")
_WAITING_EXPIRING = text("status IN ('scheduled', 'pending') AND expires_at IS NOT NULL")

operations = Table(
    "operations",
    metadata,
    # Time-ordered ids: "newest first" is a scan of the primary key index backwards.
    Column("id", String(40), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(80), nullable=False),
    Column("operation_type", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("scheduled_at", UtcDateTime(), nullable=False),
    # When the scheduler may next start it: scheduled_at, then later after a retry's backoff.
    Column("run_after", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("maintenance_window", String(128), nullable=True),
    Column("parameters", JsonType, nullable=False),
    Column("result", JsonType, nullable=True),
    Column("error", JsonType, nullable=True),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    # Lease of the worker running it; lease_version is the fencing token.
    Column("lease_owner", String(128), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("lease_version", Integer, nullable=False),
    Column("cancel_requested", Boolean, nullable=False),
    # Why a due operation waits: device_busy, maintenance_window, limit, backoff.
    Column("wait_reason", String(32), nullable=True),
    Index("ix_operations_tenant_id_id", "tenant_id", "id"),
    Index("ix_operations_tenant_id_device_id_id", "tenant_id", "device_id", "id"),
    Index("ix_operations_tenant_id_status_id", "tenant_id", "status", "id"),
    # The scheduler's queue: only waiting rows are in it, so a million finished ones cost nothing.
    Index(
        "ix_operations_due",
        "run_after",
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    ),
    # At most one running operation per device, held by the database itself.
    Index(
        "uq_operations_running_device",
        "tenant_id",
        "device_id",
        unique=True,
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    ),
    # Candidates in claim order, one range scan per priority level.
    Index(
        "ix_operations_claim",
        "priority",
        "run_after",
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    ),
    Index(
        "ix_operations_expiry",
        "expires_at",
        sqlite_where=_WAITING_EXPIRING,
        postgresql_where=_WAITING_EXPIRING,
    ),
    Index("ix_operations_started_at", "started_at"),
    # Operations waiting for their device to show up (the ACS looks them up at each Inform).
    Index(
        "ix_operations_deferred",
        "tenant_id",
        "device_id",
        sqlite_where=_DEFERRED,
        postgresql_where=_DEFERRED,
    ),
    Index(
        "ix_operations_lease",
        "lease_expires_at",
        sqlite_where=_RUNNING,
        postgresql_where=_RUNNING,
    ),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("key", String(255), nullable=False),
    # SHA-256 of the canonical request, to tell a repeat from a reuse with another body.
    Column("request_hash", String(64), nullable=False),
    Column("operation_id", String(40), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False, index=True),
    PrimaryKeyConstraint("tenant_id", "key"),
)

#: Every transition and attempt of an operation, in order (``GET /{id}/`` shows them).
operation_events = Table(
    "operation_events",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("operation_id", String(40), nullable=False),
    Column("at", UtcDateTime(), nullable=False),
    # The status entered (or "cancel_requested", "lease_refused" …).
    Column("event", String(32), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("error_code", String(64), nullable=True),
    Column("message", Text, nullable=True),
    Column("worker", String(128), nullable=True),
    Index("ix_operation_events_operation_id_id", "operation_id", "id"),
)

maintenance_windows = Table(
    "maintenance_windows",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("timezone", String(64), nullable=False),
    Column("cron", String(128), nullable=True),
    Column("duration_s", Integer, nullable=True),
    # One-off ranges: [[start, end], …] as ISO 8601 UTC strings.
    Column("ranges", JsonType, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "name"),
)

#: Firmware images operators uploaded; the bytes live in the data directory
#: (``firmware/<tenant>/<id>``), addressed by id and verified by SHA-256.
firmware_images = Table(
    "firmware_images",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(40), nullable=False),
    Column("version", String(128), nullable=False),
    # Which devices it is for (TR-069 ProductClass, or an SSH device's product_class);
    # NULL: any device.
    Column("product_class", String(64), nullable=True),
    Column("filename", String(255), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_firmware_images_tenant_id_version", "tenant_id", "version"),
)

#: Named configuration templates (``configuration_sync``): Jinja2 text for SSH devices, or
#: TR-069 parameter paths to (templated) values for CWMP devices.
config_templates = Table(
    "config_templates",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("name", String(128), nullable=False),
    Column("format", String(16), nullable=False),
    Column("content", Text, nullable=True),
    Column("parameters", JsonType, nullable=True),
    Column("description", Text, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "name"),
)

#: Configuration backups taken by ``backup_configuration``; the bytes are at ``uri``.
backups = Table(
    "backups",
    metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(40), nullable=False),
    Column("device_id", String(80), nullable=False),
    Column("operation_id", String(40), nullable=True),
    Column("uri", Text, nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("compressed", Boolean, nullable=False),
    # How it was taken: command output, file over SFTP, CWMP Upload, parameter dump.
    Column("method", String(32), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ix_backups_tenant_id_device_id_created_at", "tenant_id", "device_id", "created_at"),
)

#: What the ACS knows of each TR-069 CPE, by its device key (``OUI-ProductClass-Serial``):
#: the identity it informs with, where to send connection requests, what it last reported.
cwmp_devices = Table(
    "cwmp_devices",
    metadata,
    Column("device_key", String(200), primary_key=True),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(80), nullable=False),
    Column("oui", String(6), nullable=False),
    Column("product_class", String(64), nullable=False),
    Column("serial_number", String(64), nullable=False),
    Column("manufacturer", String(64), nullable=True),
    # "Device." (TR-181) or "InternetGatewayDevice." (TR-098), from the Inform's parameters.
    Column("root", String(32), nullable=True),
    # The cwmp namespace URI the CPE speaks (it is answered in the same one).
    Column("cwmp_ns", String(64), nullable=True),
    Column("connection_request_url", Text, nullable=True),
    Column("software_version", String(128), nullable=True),
    Column("hardware_version", String(128), nullable=True),
    Column("uptime_s", BigInteger, nullable=True),
    Column("parameter_key", String(64), nullable=True),
    Column("last_events", JsonType, nullable=True),
    Column("last_inform_at", UtcDateTime(), nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    UniqueConstraint("tenant_id", "device_id"),
)

#: One attempt of an operation on a CWMP device, as the ACS runs it: queued by the helper
#: (in whichever worker claimed the operation), run by whichever ACS process holds the CPE's
#: session, and finished there or when a later session brings its completion event.
cwmp_jobs = Table(
    "cwmp_jobs",
    metadata,
    Column("operation_id", String(40), nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("device_id", String(80), nullable=False),
    Column("device_key", String(200), nullable=False),
    Column("operation_type", String(32), nullable=False),
    Column("parameters", JsonType, nullable=False),
    Column("priority", Integer, nullable=False),
    # queued → started → (waiting: for a BOOT / TransferComplete) → done
    Column("state", String(16), nullable=False),
    Column("command_key", String(32), nullable=True, unique=True),
    # Per-transfer URL token and credentials (HA1 of Digest: never the password).
    Column("transfer_token", String(64), nullable=True, unique=True),
    Column("transfer_username", String(64), nullable=True),
    Column("transfer_ha1", String(64), nullable=True),
    Column("progress", JsonType, nullable=True),
    Column("result", JsonType, nullable=True),
    Column("error", JsonType, nullable=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    PrimaryKeyConstraint("operation_id", "attempt"),
    Index("ix_cwmp_jobs_device_key_state", "device_key", "state"),
)
