"""telemetry storage

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22 01:12:00.078655
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import fleetcore.db

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


VALUE_TYPES: dict[str, Any] = {
    "ts_num": sa.Float(53).with_variant(postgresql.DOUBLE_PRECISION(), "postgresql"),
    "ts_text": sa.Text(),
    "ts_bool": sa.Boolean(),
    "ts_json": sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
}
DAY_MS = 86_400_000


def _timescale_available() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    found = bind.execute(
        sa.text("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'")
    ).scalar()
    return found is not None


def _value_tables() -> None:
    """(series_id, ts, value) per kind: partitioned, a hypertable, or WITHOUT ROWID."""
    timescale = _timescale_available()
    if timescale:
        op.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    for name, value_type in VALUE_TYPES.items():
        options: dict[str, Any] = {"sqlite_with_rowid": False}
        if not timescale:
            options["postgresql_partition_by"] = "RANGE (ts)"
        op.create_table(
            name,
            sa.Column("series_id", sa.Integer(), nullable=False),
            sa.Column("ts", sa.BigInteger(), nullable=False),
            sa.Column("value", value_type, nullable=False),
            sa.PrimaryKeyConstraint("series_id", "ts", name=op.f(f"pk_{name}")),
            **options,
        )
        if timescale:
            op.execute(f"SELECT create_hypertable('{name}', by_range('ts', {DAY_MS}))")
            op.execute(
                f"ALTER TABLE {name} SET (timescaledb.compress, "
                "timescaledb.compress_segmentby = 'series_id', "
                "timescaledb.compress_orderby = 'ts')"
            )
            op.execute(f"SELECT add_compression_policy('{name}', {7 * DAY_MS}::bigint)")
        elif op.get_bind().dialect.name == "postgresql":
            # Rows outside every daily partition (old imports) land here; see partitions.py.
            op.execute(f"CREATE TABLE {name}_default PARTITION OF {name} DEFAULT")


def upgrade() -> None:
    _value_tables()
    op.create_table(
        "ts_keys",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.SmallInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ts_keys")),
        sa.UniqueConstraint("name", "kind", name=op.f("uq_ts_keys_name_kind")),
    )
    op.create_table(
        "ts_latest",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.BigInteger(), nullable=False),
        sa.Column(
            "num",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=True,
        ),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("bool", sa.Boolean(), nullable=True),
        sa.Column(
            "json",
            sa.JSON().with_variant(postgresql.JSONB(), "postgresql"),
            nullable=True,
        ),
        sa.PrimaryKeyConstraint("series_id", name=op.f("pk_ts_latest")),
    )
    op.create_table(
        "ts_rollup_1h",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("cnt", sa.Integer(), nullable=False),
        sa.Column(
            "total",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "vmin",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "vmax",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column("first_ts", sa.BigInteger(), nullable=False),
        sa.Column(
            "vfirst",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column(
            "vlast",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("series_id", "bucket", name=op.f("pk_ts_rollup_1h")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "ts_rollup_1m",
        sa.Column("series_id", sa.Integer(), nullable=False),
        sa.Column("bucket", sa.BigInteger(), nullable=False),
        sa.Column("cnt", sa.Integer(), nullable=False),
        sa.Column(
            "total",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "vmin",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "vmax",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column("first_ts", sa.BigInteger(), nullable=False),
        sa.Column(
            "vfirst",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.Column("last_ts", sa.BigInteger(), nullable=False),
        sa.Column(
            "vlast",
            sa.Float(precision=53).with_variant(sa.DOUBLE_PRECISION(), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("series_id", "bucket", name=op.f("pk_ts_rollup_1m")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "ts_retention",
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("raw_days", sa.Integer(), nullable=False),
        sa.Column("rollup_1m_days", sa.Integer(), nullable=False),
        sa.Column("rollup_1h_days", sa.Integer(), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ts_retention_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_ts_retention")),
    )
    op.create_table(
        "ts_series",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("key_id", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_ts_series_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["ts_keys.id"],
            name=op.f("fk_ts_series_key_id_ts_keys"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ts_series_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ts_series")),
        sa.UniqueConstraint("device_id", "key_id", name=op.f("uq_ts_series_device_id_key_id")),
    )
    with op.batch_alter_table("ts_series", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ts_series_organization_id"), ["organization_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("ts_series", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ts_series_organization_id"))

    op.drop_table("ts_series")
    op.drop_table("ts_retention")
    op.drop_table("ts_text")
    op.drop_table("ts_rollup_1m")
    op.drop_table("ts_rollup_1h")
    op.drop_table("ts_num")
    op.drop_table("ts_latest")
    op.drop_table("ts_keys")
    op.drop_table("ts_json")
    op.drop_table("ts_bool")
