"""Device-token cache invalidation across processes.

A change to a device, credential or profile committed in this process clears this process's
cache (fleetcore.devices.auth_cache) and, through `on_committed_here`, is announced on the
Redis channel `fleetcore:credentials`; every other process clears its cache (and re-checks
its live MQTT sessions, like a local change) when the announcement arrives, within
milliseconds. While Redis is down an announcement is lost: the cache's TTL (5 s) bounds how
long a revoked token still works elsewhere, and every cache is cleared when Redis is back.
"""

from __future__ import annotations

from collections.abc import Callable

from fleetcore.cluster.link import RedisLink
from fleetcore.devices import auth_cache

CHANNEL = "fleetcore:credentials"


class CredentialInvalidation:
    """Announces this process's credential changes; applies the other processes'."""

    def __init__(self, link: RedisLink) -> None:
        self.link = link
        self._pid = link.process_id.encode()
        self._interrupted = False
        self._detach: Callable[[], None] | None = None
        link.subscribe(CHANNEL, self._received)
        link.on_up.append(self._up)
        link.on_down.append(self._down)

    def attach(self) -> None:
        """Start announcing (the cache's hooks are process-wide: detach when the app stops)."""
        self._detach = auth_cache.on_committed_here(self._announce)

    def detach(self) -> None:
        """Stop announcing."""
        if self._detach is not None:
            self._detach()
            self._detach = None

    def _announce(self) -> None:
        self.link.publish(CHANNEL, self._pid, kind="credentials")

    def _received(self, data: bytes) -> None:
        if data != self._pid:
            auth_cache.invalidate(from_elsewhere=True)

    async def _up(self) -> None:
        if self._interrupted:  # announcements may have been missed meanwhile
            self._interrupted = False
            auth_cache.invalidate(from_elsewhere=True)

    def _down(self) -> None:
        self._interrupted = True
