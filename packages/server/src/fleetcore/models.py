"""Imports every domain's tables so the metadata Alembic compares against is complete."""

from __future__ import annotations

from fleetcore.accounts import models as account_models
from fleetcore.alerts import models as alert_models
from fleetcore.analytics import models as analytics_models
from fleetcore.archive import models as archive_models
from fleetcore.assets import models as asset_models
from fleetcore.attributes import models as attribute_models
from fleetcore.audit import models as audit_models
from fleetcore.auth import models as auth_models
from fleetcore.broker_sync import models as broker_sync_models
from fleetcore.commands import models as command_models
from fleetcore.db import Base
from fleetcore.deadletters import models as dead_letter_models
from fleetcore.devices import models as device_models
from fleetcore.events import models as event_models
from fleetcore.housekeeping import models as housekeeping_models
from fleetcore.job_leases import JobRun
from fleetcore.media import models as media_models
from fleetcore.notifications import models as notification_models
from fleetcore.ota import models as ota_models
from fleetcore.plans import models as plan_models
from fleetcore.plates import models as plate_models
from fleetcore.rules import models as rule_models
from fleetcore.status import models as status_models
from fleetcore.telemetry import models as telemetry_models
from fleetcore.usage import models as usage_models
from fleetcore.vending import models as vending_models

metadata = Base.metadata
__all__ = [
    "JobRun",
    "account_models",
    "alert_models",
    "analytics_models",
    "archive_models",
    "asset_models",
    "attribute_models",
    "audit_models",
    "auth_models",
    "broker_sync_models",
    "command_models",
    "dead_letter_models",
    "device_models",
    "event_models",
    "housekeeping_models",
    "media_models",
    "metadata",
    "notification_models",
    "ota_models",
    "plan_models",
    "plate_models",
    "rule_models",
    "status_models",
    "telemetry_models",
    "usage_models",
    "vending_models",
]
