"""Request dependencies of the alerts domain, shared by every router that changes alerts
(alerts, rules, plates, their pages): they take the bus from here, not from each other."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from fleetcore.alerts.events import AlertBus


def _bus(request: Request) -> AlertBus:
    bus: AlertBus = request.app.state.alert_bus
    return bus


BusDep = Annotated[AlertBus, Depends(_bus)]
