"""Scheduler: operation history, maintenance windows, claim and expiry indexes.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from headless_ops.store.types import JsonType, UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_WAITING = sa.text("status IN ('scheduled', 'pending')")
_WAITING_EXPIRING = sa.text("status IN ('scheduled', 'pending') AND expires_at IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("operations") as batch:
        batch.add_column(sa.Column("wait_reason", sa.String(32), nullable=True))
    op.create_index(
        "ix_operations_claim",
        "operations",
        ["priority", "run_after"],
        sqlite_where=_WAITING,
        postgresql_where=_WAITING,
    )
    op.create_index(
        "ix_operations_expiry",
        "operations",
        ["expires_at"],
        sqlite_where=_WAITING_EXPIRING,
        postgresql_where=_WAITING_EXPIRING,
    )
    op.create_index("ix_operations_started_at", "operations", ["started_at"])
    op.create_table(
        "operation_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("operation_id", sa.String(40), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("message", sa.Text(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_operation_events"),
    )
    op.create_index(
        "ix_operation_events_operation_id_id", "operation_events", ["operation_id", "id"]
    )
    op.create_table(
        "maintenance_windows",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("cron", sa.String(128), nullable=True),
        sa.Column("duration_s", sa.Integer(), nullable=True),
        sa.Column("ranges", JsonType, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_maintenance_windows"),
    )


def downgrade() -> None:
    op.drop_table("maintenance_windows")
    op.drop_table("operation_events")
    op.drop_index("ix_operations_started_at", "operations")
    op.drop_index("ix_operations_expiry", "operations")
    op.drop_index("ix_operations_claim", "operations")
    with op.batch_alter_table("operations") as batch:
        batch.drop_column("wait_reason")
