"""job runs: which process ran each tick of a periodic job (once per tick across processes)

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_runs",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("tick", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("started_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("finished_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", "tick", name=op.f("pk_job_runs")),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
