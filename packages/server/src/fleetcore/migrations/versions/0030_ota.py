"""ota: signing keys, packages, rollouts and their devices

Revision ID: 0030
Revises: 0028
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import fleetcore.db

revision = "0030"
down_revision = "0028"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ota_keys",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("public_key", sa.String(length=64), nullable=False),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ota_keys_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_keys")),
        sa.UniqueConstraint(
            "organization_id", "public_key", name=op.f("uq_ota_keys_organization_id_public_key")
        ),
    )
    op.create_index(
        op.f("ix_ota_keys_organization_id"), "ota_keys", ["organization_id"], unique=False
    )
    op.create_table(
        "ota_packages",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("title", sa.String(length=128), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("profile_id", sa.Uuid(), nullable=True),
        sa.Column("file_name", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("signature", sa.String(length=128), nullable=True),
        sa.Column("key_id", sa.Uuid(), nullable=True),
        sa.Column("storage_prefix", sa.String(length=256), nullable=False),
        sa.Column("part_bytes", sa.Integer(), nullable=False),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ota_packages_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["profile_id"],
            ["device_profiles.id"],
            name=op.f("fk_ota_packages_profile_id_device_profiles"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["key_id"],
            ["ota_keys.id"],
            name=op.f("fk_ota_packages_key_id_ota_keys"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_packages")),
        sa.UniqueConstraint(
            "organization_id",
            "kind",
            "title",
            "version",
            name=op.f("uq_ota_packages_organization_id_kind_title_version"),
        ),
    )
    op.create_index(
        "ix_ota_packages_organization_id_created_at",
        "ota_packages",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "ota_rollouts",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("organization_id", sa.Uuid(), nullable=False),
        sa.Column("package_id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("target", sa.JSON(), nullable=False),
        sa.Column("strategy", sa.JSON(), nullable=False),
        sa.Column("stage_sizes", sa.JSON(), nullable=False),
        sa.Column("max_failure_rate", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("paused_reason", sa.String(length=256), nullable=True),
        sa.Column("current_stage", sa.Integer(), nullable=False),
        sa.Column("failures_acknowledged", sa.Integer(), nullable=False),
        sa.Column("stage_done_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["organization_id"],
            ["organizations.id"],
            name=op.f("fk_ota_rollouts_organization_id_organizations"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["package_id"],
            ["ota_packages.id"],
            name=op.f("fk_ota_rollouts_package_id_ota_packages"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ota_rollouts")),
    )
    op.create_index(
        "ix_ota_rollouts_organization_id_created_at",
        "ota_rollouts",
        ["organization_id", "created_at"],
        unique=False,
    )
    op.create_index("ix_ota_rollouts_status", "ota_rollouts", ["status"], unique=False)
    op.create_index(
        op.f("ix_ota_rollouts_package_id"), "ota_rollouts", ["package_id"], unique=False
    )
    op.create_table(
        "ota_rollout_devices",
        sa.Column("rollout_id", sa.Uuid(), nullable=False),
        sa.Column("device_id", sa.Uuid(), nullable=False),
        sa.Column("stage", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=512), nullable=True),
        sa.Column("baseline", sa.BigInteger(), nullable=False),
        sa.Column("previous", sa.JSON(), nullable=False),
        sa.Column("previous_title", sa.String(length=128), nullable=True),
        sa.Column("previous_version", sa.String(length=64), nullable=True),
        sa.Column("assigned_at", fleetcore.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("updated_at", fleetcore.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["ota_rollouts.id"],
            name=op.f("fk_ota_rollout_devices_rollout_id_ota_rollouts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_ota_rollout_devices_device_id_devices"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("rollout_id", "device_id", name=op.f("pk_ota_rollout_devices")),
    )
    op.create_index(
        "ix_ota_rollout_devices_device_id", "ota_rollout_devices", ["device_id"], unique=False
    )
    op.create_index(
        "ix_ota_rollout_devices_rollout_id_state",
        "ota_rollout_devices",
        ["rollout_id", "state"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("ota_rollout_devices")
    op.drop_table("ota_rollouts")
    op.drop_table("ota_packages")
    op.drop_table("ota_keys")
