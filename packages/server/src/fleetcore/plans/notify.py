"""Soft limits: the organization's admins are told in-app at 80% and 100% of a limit.

Once per limit, threshold and UTC day: the notification's id is derived from those, and the
in-app notifications table holds one row per id (its unique delivery_id), so a second
request, or another process, reaching the same threshold that day inserts nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.db import new_id
from fleetcore.notifications.models import Notification
from fleetcore.plans.limits import Limit

THRESHOLDS = (80, 100)  # percent of a limit
EVENT = "plan.limit"
_NAMESPACE = uuid.UUID("8f2b7a52-3c1e-4d0a-9a57-0e6cfa2d1c29")


def reached(used: int, maximum: int) -> list[int]:
    """The thresholds `used` has reached (percent of `maximum`)."""
    if maximum <= 0:
        return list(THRESHOLDS)
    return [t for t in THRESHOLDS if used * 100 >= t * maximum]


def notice_id(organization_id: uuid.UUID, limit: Limit, threshold: int, day: date) -> uuid.UUID:
    """The same for one organization, limit, threshold and day: what makes it once."""
    return uuid.uuid5(_NAMESPACE, f"{organization_id}:{limit.value}:{threshold}:{day}")


async def warn(
    session: AsyncSession,
    organization_id: uuid.UUID,
    limit: Limit,
    *,
    used: int,
    maximum: int,
    today: date | None = None,
) -> int:
    """Stage a notification per threshold reached and not yet told today; how many were new.
    Commits with the caller's change."""
    day = today or datetime.now(UTC).date()
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    added = 0
    for threshold in reached(used, maximum):
        name = limit.value.replace("_", " ")
        row = {
            "id": new_id(),
            "organization_id": organization_id,
            "delivery_id": notice_id(organization_id, limit, threshold, day),
            "event": EVENT,
            "title": f"Plan limit: {name} at {threshold}% ({used} of {maximum})",
            "payload": {
                "audience": "admin",
                "limit": limit.value,
                "threshold": threshold,
                "used": used,
                "max": maximum,
                "day": day.isoformat(),
            },
            "created_at": datetime.now(UTC),
        }
        result = await session.execute(
            insert(Notification).values(row).on_conflict_do_nothing(index_elements=["delivery_id"])
        )
        added += max(getattr(result, "rowcount", 0), 0)
    return added
