"""plates: plate reads, visits, distinct plates with their fuzzy-search keys, watchlists

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 21:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import fleetcore.db

revision = "0021"
down_revision = "0020"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "plates",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("plate_key", sa.String(length=32), nullable=False),
        sa.Column("plate_norm", sa.String(length=32), nullable=False),
        sa.Column("plate", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("first_seen", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_seen", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.Column("visits", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_plates_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plates")),
        sa.UniqueConstraint(
            "organization_id", "plate_key", name=op.f("uq_plates_organization_id_plate_key")
        ),
    )
    with op.batch_alter_table("plates", schema=None) as batch_op:
        batch_op.create_index(
            "ix_plates_organization_id_last_seen", ["organization_id", "last_seen"], unique=False
        )

    op.create_table(
        "plate_neighbours",
        sa.Column("plate_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("nkey", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_plate_neighbours_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plate_id"],
            ["plates.id"],
            name=op.f("fk_plate_neighbours_plate_id_plates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("plate_id", "nkey", name=op.f("pk_plate_neighbours")),
    )
    with op.batch_alter_table("plate_neighbours", schema=None) as batch_op:
        batch_op.create_index(
            "ix_plate_neighbours_organization_id_nkey", ["organization_id", "nkey"], unique=False
        )

    op.create_table(
        "plate_visits",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=False),
        sa.Column("plate_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("plate_key", sa.String(length=32), nullable=False),
        sa.Column("plate_norm", sa.String(length=32), nullable=False),
        sa.Column("first_ts", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_ts", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reads", sa.Integer(), nullable=False),
        sa.Column("best_confidence", sa.Float(), nullable=False),
        sa.Column("best_read_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_plate_visits_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_plate_visits_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["plate_id"],
            ["plates.id"],
            name=op.f("fk_plate_visits_plate_id_plates"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plate_visits")),
    )
    with op.batch_alter_table("plate_visits", schema=None) as batch_op:
        batch_op.create_index(
            "ix_plate_visits_device_id_plate_key_last_ts",
            ["device_id", "plate_key", "last_ts"],
            unique=False,
        )
        batch_op.create_index(
            "ix_plate_visits_organization_id_first_ts",
            ["organization_id", "first_ts"],
            unique=False,
        )
        batch_op.create_index(
            "ix_plate_visits_plate_id_first_ts", ["plate_id", "first_ts"], unique=False
        )

    op.create_table(
        "watchlists",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.String(length=2000), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("min_confidence", sa.Float(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("rule_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_watchlists_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["rule_id"], ["rules.id"], name=op.f("fk_watchlists_rule_id_rules"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watchlists")),
        sa.UniqueConstraint(
            "organization_id", "name", name=op.f("uq_watchlists_organization_id_name")
        ),
    )
    op.create_table(
        "plate_reads",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("camera", sa.String(length=64), nullable=True),
        sa.Column("event_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("ts", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("plate", sa.String(length=32), nullable=False),
        sa.Column("plate_norm", sa.String(length=32), nullable=False),
        sa.Column("plate_key", sa.String(length=32), nullable=False),
        sa.Column("region", sa.String(length=64), nullable=True),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=True),
        sa.Column("lane", sa.SmallInteger(), nullable=True),
        sa.Column("vehicle_type", sa.String(length=64), nullable=True),
        sa.Column("vehicle_color", sa.String(length=64), nullable=True),
        sa.Column(
            "bbox",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("media_id", sa.Uuid(), nullable=True),
        sa.Column("visit_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("read_id", sa.String(length=64), nullable=True),
        sa.Column("received_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_plate_reads_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["device_events.id"],
            name=op.f("fk_plate_reads_event_id_device_events"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["media_id"],
            ["media.id"],
            name=op.f("fk_plate_reads_media_id_media"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_plate_reads_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["visit_id"],
            ["plate_visits.id"],
            name=op.f("fk_plate_reads_visit_id_plate_visits"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_plate_reads")),
    )
    with op.batch_alter_table("plate_reads", schema=None) as batch_op:
        batch_op.create_index("ix_plate_reads_device_id_ts", ["device_id", "ts"], unique=False)
        batch_op.create_index("ix_plate_reads_event_id", ["event_id"], unique=False)
        batch_op.create_index("ix_plate_reads_media_id", ["media_id"], unique=False)
        batch_op.create_index(
            "ix_plate_reads_organization_id_plate_key_ts",
            ["organization_id", "plate_key", "ts"],
            unique=False,
        )
        batch_op.create_index(
            "ix_plate_reads_organization_id_ts", ["organization_id", "ts"], unique=False
        )
        batch_op.create_index("ix_plate_reads_visit_id", ["visit_id"], unique=False)
        batch_op.create_index(
            "uq_plate_reads_device_id_read_id", ["device_id", "read_id"], unique=True
        )

    op.create_table(
        "watchlist_entries",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("watchlist_id", sa.Uuid(), nullable=False),
        sa.Column("plate", sa.String(length=32), nullable=False),
        sa.Column("plate_key", sa.String(length=32), nullable=False),
        sa.Column("note", sa.String(length=500), nullable=False),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_watchlist_entries_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["watchlist_id"],
            ["watchlists.id"],
            name=op.f("fk_watchlist_entries_watchlist_id_watchlists"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_watchlist_entries")),
        sa.UniqueConstraint(
            "watchlist_id", "plate_key", name=op.f("uq_watchlist_entries_watchlist_id_plate_key")
        ),
    )
    with op.batch_alter_table("watchlist_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_watchlist_entries_organization_id_plate_key",
            ["organization_id", "plate_key"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("watchlist_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_watchlist_entries_organization_id_plate_key")

    op.drop_table("watchlist_entries")
    with op.batch_alter_table("plate_reads", schema=None) as batch_op:
        batch_op.drop_index("ix_plate_reads_visit_id")
        batch_op.drop_index("ix_plate_reads_organization_id_ts")
        batch_op.drop_index("uq_plate_reads_device_id_read_id")
        batch_op.drop_index("ix_plate_reads_organization_id_plate_key_ts")
        batch_op.drop_index("ix_plate_reads_media_id")
        batch_op.drop_index("ix_plate_reads_event_id")
        batch_op.drop_index("ix_plate_reads_device_id_ts")

    op.drop_table("plate_reads")
    op.drop_table("watchlists")
    with op.batch_alter_table("plate_visits", schema=None) as batch_op:
        batch_op.drop_index("ix_plate_visits_plate_id_first_ts")
        batch_op.drop_index("ix_plate_visits_organization_id_first_ts")
        batch_op.drop_index("ix_plate_visits_device_id_plate_key_last_ts")

    op.drop_table("plate_visits")
    with op.batch_alter_table("plate_neighbours", schema=None) as batch_op:
        batch_op.drop_index("ix_plate_neighbours_organization_id_nkey")

    op.drop_table("plate_neighbours")
    with op.batch_alter_table("plates", schema=None) as batch_op:
        batch_op.drop_index("ix_plates_organization_id_last_seen")

    op.drop_table("plates")
