"""Credential events: where a device's MQTT credentials change, told to whoever listens.

Device creation, import, provisioning, rotation, disable/enable and deletion call `publish`
inside their transaction, before the commit, so that a listener can stage its own rows in
that same transaction (an external broker's credential store is kept in step through an
outbox: fleetcore.broker_sync). The devices domain knows nothing of MQTT: with no listener
registered (the default), `publish` does nothing.

The plaintext token exists only here, at issue time; a listener that keeps it must encrypt it.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession


class CredentialAction(StrEnum):
    """What changed: a (new) token, the device disabled or enabled again, the device gone."""

    UPSERT = "upsert"
    DISABLE = "disable"
    ENABLE = "enable"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class CredentialEvent:
    """One device's change; `token` only with UPSERT (never logged: repr hides it)."""

    organization_id: uuid.UUID
    device_id: uuid.UUID
    action: CredentialAction
    token: str | None = field(default=None, repr=False)


Listener = Callable[[AsyncSession, Sequence[CredentialEvent]], Awaitable[None]]

# Registered by the app's lifespan (fleetcore.app) and removed when it stops.
listeners: list[Listener] = []


async def publish(session: AsyncSession, *events: CredentialEvent) -> None:
    """Tell every listener, in the caller's transaction (the caller commits)."""
    if not events:
        return
    for listener in list(listeners):
        await listener(session, events)


def upsert(organization_id: uuid.UUID, device_id: uuid.UUID, token: str) -> CredentialEvent:
    """A device got a token (created, imported, provisioned, rotated)."""
    return CredentialEvent(organization_id, device_id, CredentialAction.UPSERT, token)


def change(
    organization_id: uuid.UUID, device_id: uuid.UUID, action: CredentialAction
) -> CredentialEvent:
    """A device was disabled, enabled or deleted."""
    return CredentialEvent(organization_id, device_id, action)
