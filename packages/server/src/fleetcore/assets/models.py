"""The asset tree (sites, areas, lines, machines) and typed relations between entities."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from fleetcore.db import Base, UTCDateTime, new_id, utcnow


class Asset(Base):
    """A node of an organization's asset tree; devices attach to assets."""

    __tablename__ = "assets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("assets.id", ondelete="RESTRICT"), index=True
    )
    name: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(32))  # site, area, line, machine, other
    description: Mapped[str] = mapped_column(String(2000), default="")
    properties: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class EntityRelation(Base):
    """A typed, directed edge between two entities (device or asset) of one organization."""

    __tablename__ = "entity_relations"
    __table_args__ = (
        # Also serves lookups by the "from" end (its leading columns).
        UniqueConstraint("from_type", "from_id", "to_type", "to_id", "type"),
        Index("ix_entity_relations_to_type_to_id", "to_type", "to_id"),
        Index("ix_entity_relations_organization_id_created_at", "organization_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=new_id)
    organization_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE")
    )
    # The ends are polymorphic, so they carry no foreign key; services check them.
    from_type: Mapped[str] = mapped_column(String(16))  # device | asset
    from_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    to_type: Mapped[str] = mapped_column(String(16))
    to_id: Mapped[uuid.UUID] = mapped_column(Uuid)
    type: Mapped[str] = mapped_column(String(64))  # contains, feeds, monitors, ...
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
