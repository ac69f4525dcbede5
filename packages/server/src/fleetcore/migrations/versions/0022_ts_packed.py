"""packed numeric telemetry: closed hours of a series as one row of arrays

Revision ID: 0022
Revises: 0024
Create Date: 2026-12-07 03:00:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0022"
down_revision = "0024"  # after the archives (merged first); safe for databases at 0024
branch_labels = None
depends_on = None


def _array(item: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    return sa.LargeBinary().with_variant(postgresql.ARRAY(item), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ts_num_packed",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("offs", _array(sa.Integer()), nullable=False),
        sa.Column("vals", _array(postgresql.DOUBLE_PRECISION()), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "block", name=op.f("pk_ts_num_packed")),
        sqlite_with_rowid=False,
    )


def downgrade() -> None:
    op.drop_table("ts_num_packed")
