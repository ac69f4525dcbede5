"""media: files devices attach to events, per-organization media retention, profile size limit

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-06 21:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "media",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("content_type", sa.String(length=64), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("storage_key", sa.String(length=256), nullable=False),
        sa.Column("thumb_key", sa.String(length=256), nullable=True),
        sa.Column("thumb_bytes", sa.BigInteger(), nullable=False),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("attached_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_media_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["device_events.id"],
            name=op.f("fk_media_event_id_device_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_media_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_media")),
    )
    with op.batch_alter_table("media", schema=None) as batch_op:
        batch_op.create_index(
            "ix_media_organization_id_created_at", ["organization_id", "created_at"]
        )
        batch_op.create_index("ix_media_device_id_created_at", ["device_id", "created_at"])
        batch_op.create_index("ix_media_event_id", ["event_id"])

    op.create_table(
        "media_policies",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("retention_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_media_policies_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_media_policies")),
    )
    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.add_column(sa.Column("media_max_bytes", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("device_profiles", schema=None) as batch_op:
        batch_op.drop_column("media_max_bytes")
    op.drop_table("media_policies")
    with op.batch_alter_table("media", schema=None) as batch_op:
        batch_op.drop_index("ix_media_event_id")
        batch_op.drop_index("ix_media_device_id_created_at")
        batch_op.drop_index("ix_media_organization_id_created_at")
    op.drop_table("media")
