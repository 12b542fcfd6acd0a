"""Index of operations waiting for an unreachable device to show up.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa

from headless_ops.store.migrations import online

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

_DEFERRED = sa.text("status = 'pending' AND wait_reason = 'device_unreachable'")


def upgrade() -> None:
    # Built concurrently on PostgreSQL: operations keep being written meanwhile (online.py).
    online.create_index(
        "ix_operations_deferred", "operations", ["tenant_id", "device_id"], where=_DEFERRED
    )


def downgrade() -> None:
    online.drop_index("ix_operations_deferred", "operations")
