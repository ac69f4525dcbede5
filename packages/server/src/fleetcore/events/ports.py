"""What other modules add to device events: checks on the event types and fields they own, and
work in the transaction that stores the events (media attachments, plate reads).

The contract, the same for both transports (HTTP answers a refusal with a 4xx, MQTT records a
dead letter; either way nothing of the payload is stored):

- ``wants(event)`` is pure and cheap: whether this hook has anything to do with the event. A
  payload none of whose events a hook wants never reaches that hook, and a payload no hook
  wants is stored on the plain path (one INSERT, no RETURNING, nothing after the commit): most
  devices' events are neither images nor plate reads, and they should not pay for them.
- ``check(event)`` is pure and cheap. It runs for every event of a payload before anything is
  stored and raises ``Invalid`` (a code, and details naming the index and field) to refuse the
  payload. It sees every event; a hook ignores the types and fields it does not own.
- ``stored(session, device, events)`` runs inside the transaction that inserted the events (each
  has its id now), before the commit. It may write its own rows; it raises a ``DomainError`` to
  refuse the whole payload (the caller rolls back). It never commits. It returns what to do once
  the commit succeeded (publish alert changes, live messages), or None. After-commit work must
  not raise; a failure there is logged, the events stay stored.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.events.codec import EventIn

AfterCommit = Callable[[], None]


class EventSource(Protocol):
    """The device an event comes from: the ORM row or the ingest cache's copy."""

    @property
    def id(self) -> uuid.UUID:
        """The device's id."""

    @property
    def organization_id(self) -> uuid.UUID:
        """The device's organization."""


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An event inserted in the current transaction, with its row id."""

    id: int
    ts_ms: int
    type: str
    severity: str
    data: dict[str, Any]
    media: tuple[str, ...]


class EventHook(Protocol):
    """A module's share of event ingest; see the module docstring for the contract."""

    def wants(self, event: EventIn) -> bool:
        """Whether the event is one this hook checks or writes rows for."""
        ...

    def check(self, event: EventIn, index: int | None) -> None:
        """Refuse an event this hook owns that is not well formed (Invalid)."""
        ...

    async def stored(
        self, session: AsyncSession, device: EventSource, events: Sequence[StoredEvent]
    ) -> AfterCommit | None:
        """Write this hook's rows for the stored events; what to run after the commit."""
        ...
