"""TR-069: what the ACS knows of each CPE, and the jobs it runs in CPE sessions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from headless_ops.store.types import JsonType, UtcDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cwmp_devices",
        sa.Column("device_key", sa.String(200), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(80), nullable=False),
        sa.Column("oui", sa.String(6), nullable=False),
        sa.Column("product_class", sa.String(64), nullable=False),
        sa.Column("serial_number", sa.String(64), nullable=False),
        sa.Column("manufacturer", sa.String(64), nullable=True),
        sa.Column("root", sa.String(32), nullable=True),
        sa.Column("cwmp_ns", sa.String(64), nullable=True),
        sa.Column("connection_request_url", sa.Text(), nullable=True),
        sa.Column("software_version", sa.String(128), nullable=True),
        sa.Column("hardware_version", sa.String(128), nullable=True),
        sa.Column("uptime_s", sa.BigInteger(), nullable=True),
        sa.Column("parameter_key", sa.String(64), nullable=True),
        sa.Column("last_events", JsonType, nullable=True),
        sa.Column("last_inform_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("device_key", name="pk_cwmp_devices"),
        sa.UniqueConstraint("tenant_id", "device_id", name="uq_cwmp_devices_tenant_id_device_id"),
    )
    op.create_table(
        "cwmp_jobs",
        sa.Column("operation_id", sa.String(40), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(80), nullable=False),
        sa.Column("device_key", sa.String(200), nullable=False),
        sa.Column("operation_type", sa.String(32), nullable=False),
        sa.Column("parameters", JsonType, nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("command_key", sa.String(32), nullable=True),
        sa.Column("transfer_token", sa.String(64), nullable=True),
        sa.Column("transfer_username", sa.String(64), nullable=True),
        sa.Column("transfer_ha1", sa.String(64), nullable=True),
        sa.Column("progress", JsonType, nullable=True),
        sa.Column("result", JsonType, nullable=True),
        sa.Column("error", JsonType, nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("operation_id", "attempt", name="pk_cwmp_jobs"),
        sa.UniqueConstraint("command_key", name="uq_cwmp_jobs_command_key"),
        sa.UniqueConstraint("transfer_token", name="uq_cwmp_jobs_transfer_token"),
    )
    op.create_index("ix_cwmp_jobs_device_key_state", "cwmp_jobs", ["device_key", "state"])


def downgrade() -> None:
    op.drop_table("cwmp_jobs")
    op.drop_table("cwmp_devices")
