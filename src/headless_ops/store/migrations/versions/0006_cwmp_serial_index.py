"""Index of devices by their CPE serial number (the connection's ``serial_number``).

A CPE informing for the first time looks for the inventory device registered for it by
serial number: without this index, a scan of every device waiting for its CPE.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from headless_ops.store.migrations import online

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The very expression the lookup filters on (store.types.json_text), spelled here so that
    # this revision stays what it is whatever the schema module becomes.
    if op.get_bind().dialect.name == "sqlite":
        expression = """json_extract(connection, '$."serial_number"')"""
    else:
        expression = "(connection ->> 'serial_number')"
    # Built concurrently on PostgreSQL: devices keep being written meanwhile (online.py).
    online.create_index("ix_devices_cwmp_serial", "devices", [sa.text(expression)])


def downgrade() -> None:
    online.drop_index("ix_devices_cwmp_serial", "devices")
