"""DEX files arriving over MQTT (devices/{id}/dex, v1/devices/me/dex).

The device-message layer calls `DexReceiver.receive` for each message (vending never imports the
broker's side): the audit is stored, accounted and its telemetry committed before it
returns, so the PUBACK that waits on it means durable. A payload that is no DEX file comes
back as the dead letter's (reason, detail); a database that cannot be reached raises, so
no PUBACK goes out and the device sends the file again (stored once: duplicates are
recognised by content).
"""

from __future__ import annotations

import uuid
from typing import Protocol

from fleetcore.db import Database
from fleetcore.errors import DomainError, Unavailable
from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.vending.audits import ingest_dex


class Sender(Protocol):
    """The device a message came from (the gateway's authenticated device)."""

    @property
    def id(self) -> uuid.UUID:
        """The device's id."""

    @property
    def organization_id(self) -> uuid.UUID:
        """The device's organization."""


class DexReceiver:
    """Stores DEX files devices publish."""

    def __init__(self, database: Database, pipeline: IngestPipeline | None) -> None:
        self.database = database
        self.pipeline = pipeline

    async def receive(self, device: Sender, payload: bytes) -> tuple[str, str] | None:
        """None once stored (or a duplicate of a stored file); else (reason, detail)."""
        try:
            async with self.database.session(write=True) as session:
                await ingest_dex(
                    session,
                    organization_id=device.organization_id,
                    device_id=device.id,
                    raw=payload,
                    source="mqtt",
                    pipeline=self.pipeline,
                )
        except Unavailable:
            raise  # not stored: no PUBACK, the device retries
        except DomainError as exc:
            return exc.code.lower(), exc.message
        return None
