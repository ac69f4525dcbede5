"""The plates module's share of event ingest (events/ports.py): plate_read events checked
before anything is stored, then their reads, visits and watchlist alerts written in the
events' transaction, and the alert changes published after the commit."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.alerts.events import AlertBus
from fleetcore.events.codec import EventIn
from fleetcore.events.ports import AfterCommit, EventSource, StoredEvent
from fleetcore.live.hub import LiveEvent
from fleetcore.plates.ingest import IncomingRead, record_reads
from fleetcore.plates.reads import PLATE_READ, parse_read


class PlateHook:
    """Implements EventHook for ``plate_read`` events; other types pass untouched."""

    def __init__(self, bus: AlertBus, *, visit_window_s: int = 60, public_url: str = "") -> None:
        self.bus = bus  # its hub also carries the reads to the live /plates page
        self.visit_window_s = visit_window_s
        self.public_url = public_url  # links in alerts absolute when set

    def wants(self, event: EventIn) -> bool:
        """plate_read events only."""
        return event.type == PLATE_READ

    def check(self, event: EventIn, index: int | None) -> None:
        """Refuse a plate_read whose data is not a well-formed read (INVALID_PLATE_READ)."""
        if event.type == PLATE_READ:
            parse_read(event.data, index)

    async def stored(
        self, session: AsyncSession, device: EventSource, events: Sequence[StoredEvent]
    ) -> AfterCommit | None:
        """Write the reads of the stored plate_read events; publish alerts after the commit."""
        reads = [
            IncomingRead(event.id, event.ts_ms, parse_read(event.data, None), event.media)
            for event in events
            if event.type == PLATE_READ
        ]
        if not reads:
            return None
        rows, changes = await record_reads(
            session,
            device,
            reads,
            visit_window_s=self.visit_window_s,
            public_url=self.public_url,
        )
        live = [
            LiveEvent(
                device.organization_id,
                "plates",
                device.id,
                {"type": "plate_read", "read": {"id": row.id, "device_id": str(device.id)}},
            )
            for row in rows
        ]
        bus = self.bus

        def publish() -> None:
            for event in live:
                bus.hub.publish(event)
            bus.committed(changes)

        return publish
