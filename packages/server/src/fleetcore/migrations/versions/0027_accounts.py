"""accounts: links of sign-up, password reset and invitation (single use, expiring)

Revision ID: 0027
Revises: 0024
Create Date: 2026-12-07 03:40:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0027"
down_revision = "0022"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "account_links",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=True),
        sa.Column("user_id", sa.Uuid(), nullable=True),
        sa.Column("role", sa.String(length=16), nullable=True),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("created_by", sa.Uuid(), nullable=True),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expires_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("used_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_account_links_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_account_links_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_account_links_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_account_links")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_account_links_token_hash")),
    )
    op.create_index(op.f("ix_account_links_email"), "account_links", ["email"])
    op.create_index(op.f("ix_account_links_user_id"), "account_links", ["user_id"])
    op.create_index(
        "ix_account_links_organization_id_purpose",
        "account_links",
        ["organization_id", "purpose"],
    )


def downgrade() -> None:
    op.drop_table("account_links")
