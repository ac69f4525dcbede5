"""The media module's share of event ingest (events/ports.py): events name their attachments
by media id; the hook attaches them in the transaction that stores the events."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.ext.asyncio import AsyncSession

from fleetcore.events.codec import EventIn
from fleetcore.events.ports import AfterCommit, EventSource, StoredEvent
from fleetcore.media import service


class MediaHook:
    """check: every reference is a media id (a multipart request has swapped its part names
    for the ids of the files it stored); stored: attach them or refuse the payload."""

    def wants(self, event: EventIn) -> bool:
        """Events naming attachments."""
        return bool(event.media)

    def check(self, event: EventIn, index: int | None) -> None:
        """Shape only: ids, not part names (those exist only inside a multipart request)."""
        for ref in event.media:
            if service.parse_reference(ref) is None:
                raise service.bad_reference(index, ref)

    async def stored(
        self, session: AsyncSession, device: EventSource, events: Sequence[StoredEvent]
    ) -> AfterCommit | None:
        """Attach each event's media (event_id, attached_at); refuses what is not attachable."""
        await service.attach(session, device, events)
        return None
