"""vending route order and fill start

Revision ID: 0014
Revises: 0011
Create Date: 2026-12-06 11:34:02.209157
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Machines already on a route keep the order they had (all 0: by name) until set again.
    with op.batch_alter_table("vending_machines", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("route_position", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("vending_pick_lines", schema=None) as batch_op:
        batch_op.add_column(sa.Column("stock_before", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("vending_pick_lines", schema=None) as batch_op:
        batch_op.drop_column("stock_before")
    with op.batch_alter_table("vending_machines", schema=None) as batch_op:
        batch_op.drop_column("route_position")
