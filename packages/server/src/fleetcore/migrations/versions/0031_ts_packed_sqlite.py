"""packed numeric telemetry on SQLite: ts_num_packed as a rowid table

Revision ID: 0031
Revises: 0026
Create Date: 2026-12-07 06:00:00.000000

SQLite now packs closed hours too (telemetry/sqlite_packing.py). A WITHOUT ROWID table keeps
at most ~1 KB of a row in its b-tree page and spills the rest to overflow pages of its own
(13 B a reading for packed 10-second data, bench/telemetry_compaction.py); a rowid table
keeps rows up to ~4 KB in the page (5.8 B). Nothing was packed on SQLite before, so the
empty table is simply made again. PostgreSQL is unchanged.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0031"
down_revision = "0026"
branch_labels = None
depends_on = None


def _create(*, rowid: bool) -> None:
    op.create_table(
        "ts_num_packed",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("offs", sa.LargeBinary(), nullable=False),
        sa.Column("vals", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "block", name=op.f("pk_ts_num_packed")),
        sqlite_with_rowid=rowid,
    )


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_table("ts_num_packed")
    _create(rowid=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    op.drop_table("ts_num_packed")  # packed hours go with it: unpack them first (compaction)
    _create(rowid=False)
