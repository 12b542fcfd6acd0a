"""Firmware images, configuration templates and configuration backups.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

from headless_ops.store.types import JsonType, UtcDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "firmware_images",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("product_class", sa.String(64), nullable=True),
        sa.Column("filename", sa.String(255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_firmware_images"),
    )
    op.create_index(
        "ix_firmware_images_tenant_id_version", "firmware_images", ["tenant_id", "version"]
    )
    op.create_table(
        "config_templates",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("parameters", JsonType, nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "name", name="pk_config_templates"),
    )
    op.create_table(
        "backups",
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(80), nullable=False),
        sa.Column("operation_id", sa.String(40), nullable=True),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("compressed", sa.Boolean(), nullable=False),
        sa.Column("method", sa.String(32), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "id", name="pk_backups"),
    )
    op.create_index(
        "ix_backups_tenant_id_device_id_created_at",
        "backups",
        ["tenant_id", "device_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("backups")
    op.drop_table("config_templates")
    op.drop_table("firmware_images")
