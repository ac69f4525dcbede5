"""archives: which organization-day is archived as Parquet, and retention's archive rule

Revision ID: 0024
Revises: 0021
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0024"
down_revision = "0021"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ts_archives",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("files", sa.Integer(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("min_ts", sa.BigInteger(), nullable=True),
        sa.Column("max_ts", sa.BigInteger(), nullable=True),
        sa.Column("store", sa.String(length=16), nullable=False),
        sa.Column("location", sa.String(length=256), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("stale_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("purged_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ts_archives_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ts_archives")),
        sa.UniqueConstraint(
            "organization_id", "day", name=op.f("uq_ts_archives_organization_id_day")
        ),
    )
    with op.batch_alter_table("ts_retention", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requires_archive", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ts_retention", schema=None) as batch_op:
        batch_op.drop_column("requires_archive")
    op.drop_table("ts_archives")
