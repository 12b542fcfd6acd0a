"""Index of devices by their CPE serial number (the connection's ``serial_number``).

A CPE informing for the first time looks for the inventory device registered for it by
serial number: without this index, a scan of every device waiting for its CPE.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from alembic import op

from headless_ops.store.schema import device_serial

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The very expression the lookup filters on (json_extract / ->>), so both engines use it.
    op.create_index("ix_devices_cwmp_serial", "devices", [device_serial])


def downgrade() -> None:
    op.drop_index("ix_devices_cwmp_serial", "devices")
