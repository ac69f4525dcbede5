"""device commands

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22 04:13:44.445655
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import fleetcore.db

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "device_commands",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("rpc_id", sa.Integer(), nullable=False),
        sa.Column("method", sa.String(length=64), nullable=False),
        sa.Column("params", _JSON, nullable=False),
        sa.Column("persistent", sa.Boolean(), nullable=False),
        sa.Column("timeout_s", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("channel", sa.String(length=16), nullable=True),
        sa.Column("result", _JSON, nullable=True),
        sa.Column("error", sa.String(length=1000), nullable=True),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("completed_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expired_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_device_commands_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_device_commands_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_device_commands")),
        sa.UniqueConstraint(
            "device_id", "rpc_id", name=op.f("uq_device_commands_device_id_rpc_id")
        ),
    )
    with op.batch_alter_table("device_commands", schema=None) as batch_op:
        batch_op.create_index(
            "ix_device_commands_device_id_created_at", ["device_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_device_commands_device_id_status_created_at",
            ["device_id", "status", "created_at"],
            unique=False,
        )
        batch_op.create_index(
            batch_op.f("ix_device_commands_organization_id"), ["organization_id"], unique=False
        )
        batch_op.create_index(
            "ix_device_commands_status_expires_at", ["status", "expires_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("device_commands", schema=None) as batch_op:
        batch_op.drop_index("ix_device_commands_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_device_commands_organization_id"))
        batch_op.drop_index("ix_device_commands_device_id_status_created_at")
        batch_op.drop_index("ix_device_commands_device_id_created_at")
    op.drop_table("device_commands")
