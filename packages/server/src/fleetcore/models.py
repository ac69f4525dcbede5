"""Imports every domain's tables so the metadata Alembic compares against is complete."""

from __future__ import annotations

from fleetcore.db import Base

metadata = Base.metadata
