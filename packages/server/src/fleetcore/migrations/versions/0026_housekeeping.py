"""housekeeping: organizations' own retention days, and the index expired sessions go by

Revision ID: 0026
Revises: 0024
Create Date: 2026-12-07 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0026"
down_revision = "0027"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "housekeeping_retention",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("table_name", sa.String(length=64), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_housekeeping_retention_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "organization_id", "table_name", name=op.f("pk_housekeeping_retention")
        ),
    )
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.create_index("ix_refresh_tokens_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens", schema=None) as batch_op:
        batch_op.drop_index("ix_refresh_tokens_expires_at")
    op.drop_table("housekeeping_retention")
