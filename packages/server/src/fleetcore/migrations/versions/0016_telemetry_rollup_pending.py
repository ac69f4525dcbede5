"""telemetry roll-up log; roll-up and latest tables leave room for HOT updates

Revision ID: 0016
Revises: 0014
Create Date: 2026-12-06 12:50:00.000000
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0016"
down_revision = "0014"
branch_labels = None
depends_on = None

# Roll-up and latest rows are updated in place many times; free space on each page lets
# PostgreSQL do it without a new index entry (HOT), which keeps the tables and their
# indexes from growing with every update.
_UPDATED_IN_PLACE = ("ts_rollup_1m", "ts_rollup_1h", "ts_latest")
FILLFACTOR = 70


def _array(item: sa.types.TypeEngine[Any]) -> sa.types.TypeEngine[Any]:
    return sa.LargeBinary().with_variant(postgresql.ARRAY(item), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ts_rollup_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("series_ids", _array(sa.Integer()), nullable=False),
        sa.Column("stamps", _array(sa.BigInteger()), nullable=False),
        sa.Column("vals", _array(postgresql.DOUBLE_PRECISION()), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ts_rollup_pending")),
    )
    if op.get_bind().dialect.name == "postgresql":
        for table in _UPDATED_IN_PLACE:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")
        for column in ("series_ids", "stamps", "vals"):
            # Out of line but not compressed: a batch's ids, stamps and values hardly
            # compress, and compressing them costs the writer CPU twice (in and out).
            op.execute(f"ALTER TABLE ts_rollup_pending ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _UPDATED_IN_PLACE:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.drop_table("ts_rollup_pending")
