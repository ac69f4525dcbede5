"""plans: named limits, and the plan of an organization (none: unlimited)

Revision ID: 0029
Revises: 0030
Create Date: 2026-12-07 05:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0029"
down_revision = "0030"
branch_labels = None
depends_on = None

_LIMITS = (
    "max_devices",
    "max_readings_per_day",
    "max_messages_per_second",
    "max_retention_days",
    "max_api_requests_per_minute",
    "max_users",
)


def upgrade() -> None:
    op.create_table(
        "plans",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        *(sa.Column(name, sa.Integer(), nullable=True) for name in _LIMITS),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plans")),
        sa.UniqueConstraint("name", name=op.f("uq_plans_name")),
    )
    op.create_table(
        "organization_plans",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("plan_id", sa.Uuid(), nullable=False),
        sa.Column("assigned_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_organization_plans_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"],
            ["plans.id"],
            name=op.f("fk_organization_plans_plan_id_plans"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_organization_plans")),
    )
    with op.batch_alter_table("organization_plans", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_organization_plans_plan_id"), ["plan_id"], unique=False
        )

    op.create_table(
        "plan_versions",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plan_versions")),
    )


def downgrade() -> None:
    op.drop_table("plan_versions")
    op.drop_table("organization_plans")
    op.drop_table("plans")
