"""ota: one open rollout per device and kind, held by a partial unique index

Revision ID: 0033
Revises: 0029
Create Date: 2026-12-10 10:00:00.000000

`ota_rollout_devices.open_kind` is the package kind while the row's rollout is open (and
NULL once it ends), and `ux_ota_rollout_devices_open` is unique on (device_id, open_kind)
where it is set: two rollouts created at once for one device and kind cannot both commit.
Rows of open rollouts get their kind here; were a device in two open rollouts of a kind
already (the race this closes), the older rollout keeps the claim.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0033"
down_revision = "0029"
branch_labels = None
depends_on = None

_OPEN = ("active", "paused")
_RELEASED = ("cancelled", "rolled_back")


def upgrade() -> None:
    with op.batch_alter_table("ota_rollout_devices") as batch:
        batch.add_column(sa.Column("open_kind", sa.String(length=16), nullable=True))
    connection = op.get_bind()
    rows = connection.execute(
        sa.text(
            "SELECT d.rollout_id, d.device_id, p.kind FROM ota_rollout_devices d "
            "JOIN ota_rollouts r ON r.id = d.rollout_id "
            "JOIN ota_packages p ON p.id = r.package_id "
            "WHERE r.status IN :open AND d.state NOT IN :released "
            "ORDER BY r.created_at, r.id"
        ).bindparams(
            sa.bindparam("open", expanding=True), sa.bindparam("released", expanding=True)
        ),
        {"open": list(_OPEN), "released": list(_RELEASED)},
    ).all()
    claimed: set[tuple[object, str]] = set()
    for rollout_id, device_id, kind in rows:
        if (device_id, kind) in claimed:
            continue
        claimed.add((device_id, kind))
        connection.execute(
            sa.text(
                "UPDATE ota_rollout_devices SET open_kind = :kind "
                "WHERE rollout_id = :rollout AND device_id = :device"
            ),
            {"kind": kind, "rollout": rollout_id, "device": device_id},
        )
    op.create_index(
        "ux_ota_rollout_devices_open",
        "ota_rollout_devices",
        ["device_id", "open_kind"],
        unique=True,
        postgresql_where=sa.text("open_kind IS NOT NULL"),
        sqlite_where=sa.text("open_kind IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ux_ota_rollout_devices_open", table_name="ota_rollout_devices")
    with op.batch_alter_table("ota_rollout_devices") as batch:
        batch.drop_column("open_kind")
