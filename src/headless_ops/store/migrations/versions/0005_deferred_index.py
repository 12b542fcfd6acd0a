"""Index of operations waiting for an unreachable device to show up.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DEFERRED = sa.text("status = 'pending' AND wait_reason = 'device_unreachable'")


def upgrade() -> None:
    op.create_index(
        "ix_operations_deferred",
        "operations",
        ["tenant_id", "device_id"],
        sqlite_where=_DEFERRED,
        postgresql_where=_DEFERRED,
    )


def downgrade() -> None:
    op.drop_index("ix_operations_deferred", "operations")
