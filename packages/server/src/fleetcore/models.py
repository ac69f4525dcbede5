"""Imports every domain's tables so the metadata Alembic compares against is complete."""

from __future__ import annotations

from fleetcore.audit import models as audit_models
from fleetcore.auth import models as auth_models
from fleetcore.db import Base

metadata = Base.metadata
__all__ = ["audit_models", "auth_models", "metadata"]
