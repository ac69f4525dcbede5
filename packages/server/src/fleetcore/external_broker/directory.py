"""Which device a message on an external broker came from, by the id its topic names.

The broker already authenticated the sender and enforced its topics (dynamic security, or
Fleetcore's HTTP endpoints), so a worker only needs the device's organization and profile
rules: looked up by id, a batch at a time, and kept for a short while. A device deleted or
disabled since is refused here (the broker may still hold a stale session for a moment).
Credential and profile changes made in this process forget the cache at once
(fleetcore.devices.auth_cache); another process's changes are seen within TTL_S.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

from sqlalchemy import select

from fleetcore.db import Database
from fleetcore.devices import auth_cache
from fleetcore.devices.models import Device, DeviceProfile, DeviceStatus

TTL_S = 30.0
MAX_ENTRIES = 200_000


class DeviceDirectory:
    """Device id (as in the topic) -> IngestDevice, or None for no live device."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self._entries: dict[str, tuple[float, auth_cache.IngestDevice | None]] = {}
        self._stop = auth_cache.on_invalidate(self._entries.clear)

    def close(self) -> None:
        """Stop hearing of credential changes."""
        self._stop()

    def cached(self, key: str) -> tuple[bool, auth_cache.IngestDevice | None]:
        """(known, device): known is False when the id must be looked up first."""
        hit = self._entries.get(key)
        if hit is None or hit[0] < time.monotonic():
            return False, None
        return True, hit[1]

    async def load(self, keys: Iterable[str]) -> dict[str, auth_cache.IngestDevice | None]:
        """Look up these ids in one query and return what was found (None: no live device);
        both are remembered. Use the answer, not a later `cached`: a credential change in
        between may clear the cache."""
        wanted: dict[str, uuid.UUID | None] = {}
        for key in keys:
            try:
                wanted[key] = uuid.UUID(key)
            except ValueError:
                wanted[key] = None  # no device has such an id
        ids = [value for value in wanted.values() if value is not None]
        found: dict[uuid.UUID, auth_cache.IngestDevice] = {}
        if ids:
            async with self.database.session() as session:
                rows = await session.execute(
                    select(Device.id, Device.organization_id, DeviceProfile)
                    .outerjoin(DeviceProfile, DeviceProfile.id == Device.profile_id)
                    .where(
                        Device.id.in_(ids),
                        Device.deleted_at.is_(None),
                        Device.status != DeviceStatus.DISABLED,
                    )
                )
                for device_id, organization_id, profile in rows:
                    found[device_id] = auth_cache.IngestDevice(
                        id=device_id,
                        organization_id=organization_id,
                        profile=auth_cache.ProfileRules.of(profile) if profile else None,
                    )
        if len(self._entries) + len(wanted) > MAX_ENTRIES:
            self._entries.clear()
        expires = time.monotonic() + TTL_S
        answer = {
            key: found.get(wanted_id) if wanted_id else None for key, wanted_id in wanted.items()
        }
        for key, device in answer.items():
            self._entries[key] = (expires, device)
        return answer
