"""broker credential outbox (Mosquitto dynamic security kept in step with the devices)

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-06 15:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "broker_credential_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("secret", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("lease_until", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("done_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_broker_credential_outbox_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_broker_credential_outbox")),
    )
    with op.batch_alter_table("broker_credential_outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_broker_credential_outbox_device_id_id", ["device_id", "id"], unique=False
        )
        batch_op.create_index(
            "ix_broker_credential_outbox_pending", ["done_at", "next_attempt_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("broker_credential_outbox")
