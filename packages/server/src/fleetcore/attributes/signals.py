"""After-commit notices of shared and client attribute changes (desired state pushes).

A service that changes shared attributes notes the change on its ORM session; once the
session commits, every listener hears of it (a rolled-back change is forgotten). Listeners
are plain callables run on the event loop: they schedule work, they do not block.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

log = structlog.get_logger(__name__)

_KEY = "fleetcore_shared_changes"


@dataclass(frozen=True, slots=True)
class SharedChange:
    """Attributes of one device changed: new values, deleted keys, the scope's new version.

    `scope` is "shared" (desired state, pushed to the device) or "client" (what it reported).
    """

    device_id: uuid.UUID
    version: int
    values: dict[str, Any]
    deleted: tuple[str, ...]
    scope: str = "shared"


Listener = Callable[[SharedChange], None]
_listeners: list[Listener] = []


def listen(listener: Listener) -> Callable[[], None]:
    """Hear of every committed shared-attribute change; returns a function to stop."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


def note(session: AsyncSession, change: SharedChange) -> None:
    """Record a change to announce when `session` commits."""
    session.sync_session.info.setdefault(_KEY, []).append(change)


@event.listens_for(Session, "after_commit")
def _announce(session: Session) -> None:
    for change in session.info.pop(_KEY, ()):
        for listener in list(_listeners):
            try:
                listener(change)
            except Exception:
                log.exception("shared_change_listener_failed")


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    session.info.pop(_KEY, None)
