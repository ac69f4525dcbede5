"""usage: counters per organization and UTC day, their monthly roll-up, active devices

Revision ID: 0028
Revises: 0031
Create Date: 2026-12-08 04:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0028"
down_revision = "0031"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_daily",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("transport", sa.String(length=32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "day", "kind", "transport", name=op.f("pk_usage_daily")
        ),
    )
    # The roll-up and the meter's refresh read by day across organizations.
    op.create_index("ix_usage_daily_day", "usage_daily", ["day"])
    op.create_table(
        "usage_monthly",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("transport", sa.String(length=32), nullable=False),
        sa.Column("n", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "month", "kind", "transport", name=op.f("pk_usage_monthly")
        ),
    )
    op.create_table(
        "usage_device_days",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.PrimaryKeyConstraint(
            "organization_id", "day", "device_id", name=op.f("pk_usage_device_days")
        ),
    )
    op.create_index("ix_usage_device_days_day", "usage_device_days", ["day"])


def downgrade() -> None:
    op.drop_index("ix_usage_device_days_day", table_name="usage_device_days")
    op.drop_table("usage_device_days")
    op.drop_table("usage_monthly")
    op.drop_index("ix_usage_daily_day", table_name="usage_daily")
    op.drop_table("usage_daily")
