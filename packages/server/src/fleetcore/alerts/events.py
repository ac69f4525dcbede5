"""What follows an alert change: notifications staged in its transaction (the outbox), a
live message and the rules engine told after the commit."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.models import Alert
from fleetcore.alerts.schemas import AlertOut
from fleetcore.live.hub import LiveEvent, LiveHub
from fleetcore.notifications.outbox import stage_alert_change


@dataclass(frozen=True, slots=True)
class AlertChange:
    """One alert event: opened, repeated, acknowledged, cleared, commented or assigned."""

    event: str
    organization_id: uuid.UUID
    rule_id: uuid.UUID | None
    device_id: uuid.UUID
    alert: dict[str, Any]  # the alert as the API shows it
    cleared_by_hand: bool = False


async def stage(session: AsyncSession, alert: Alert, event: str, **extra: Any) -> AlertChange:
    """Record the change for after the commit (and in the outbox, in this transaction)."""
    await session.flush()
    body = AlertOut.model_validate(alert).model_dump(mode="json")
    body.update(extra)
    change = AlertChange(
        event=f"alert.{event}",
        organization_id=alert.organization_id,
        rule_id=alert.rule_id,
        device_id=alert.device_id,
        alert=body,
        cleared_by_hand=event == "cleared" and alert.clear_reason != "condition",
    )
    await stage_alert_change(session, change)
    return change


Listener = Callable[[AlertChange], None]


class AlertBus:
    """Hands committed alert changes to the live hub and to listeners (the rules engine)."""

    def __init__(self, hub: LiveHub) -> None:
        self.hub = hub
        self.listeners: list[Listener] = []

    def committed(self, changes: Sequence[AlertChange]) -> None:
        """Call after the transaction holding these changes committed."""
        for change in changes:
            self.hub.publish(
                LiveEvent(
                    change.organization_id,
                    "alerts",
                    change.device_id,
                    {"type": "alert", "event": change.event, "alert": change.alert},
                )
            )
            for listener in self.listeners:
                listener(change)
