"""usage_flushes: the ids of committed meter flushes (a retry after a lost acknowledgement)

Revision ID: 0032
Revises: 0033
Create Date: 2026-12-09 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0032"
down_revision = "0033"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_flushes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_usage_flushes")),
    )
    # The roll-up job prunes ids by age.
    op.create_index("ix_usage_flushes_at", "usage_flushes", ["at"])


def downgrade() -> None:
    op.drop_index("ix_usage_flushes_at", table_name="usage_flushes")
    op.drop_table("usage_flushes")
