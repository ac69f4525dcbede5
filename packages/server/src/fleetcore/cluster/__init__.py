"""What several Fleetcore processes share through Redis (FLEETCORE_REDIS_URL).

`shared_state(settings)` is the one place that chooses between the in-process parts (no Redis:
one process, today's behaviour) and the Redis-backed ones. Each part implements a port
written down where it is used:

- live fan-out: fleetcore.live.hub.LiveHub -> cluster.hub.RedisHub
- presence across processes: fleetcore.status.presence.PresenceShare -> cluster.presence
- the per-device command lock: fleetcore.commands.delivery.DeviceLocks -> cluster.locks
- device-token cache invalidation: fleetcore.devices.auth_cache's hooks -> cluster.credentials
- login (and any API) rate limits: `limits` storage (fleetcore.ratelimits), memory or Redis

All of them go through one `RedisLink` (cluster.link: timeouts, reconnection, heartbeat).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fleetcore.cluster.credentials import CredentialInvalidation
from fleetcore.cluster.hub import RedisHub
from fleetcore.cluster.link import RedisLink
from fleetcore.cluster.locks import RedisDeviceLocks
from fleetcore.cluster.presence import RedisPresence
from fleetcore.commands.delivery import DeviceLocks, LocalLocks
from fleetcore.config import Settings
from fleetcore.live.hub import InProcessHub, LiveHub
from fleetcore.ops.readiness import Check
from fleetcore.status.presence import PresenceShare


class RedisComponent:
    """The lifespan component: the link up first and down last; the cache hooks with it."""

    name = "redis"

    def __init__(self, link: RedisLink, credentials: CredentialInvalidation) -> None:
        self.link = link
        self.credentials = credentials

    async def start(self) -> None:
        """Connect in the background and start announcing credential changes."""
        self.credentials.attach()
        await self.link.start()

    async def stop(self) -> None:
        """Stop announcing; close the link."""
        self.credentials.detach()
        await self.link.stop()


@dataclass(slots=True)
class Shared:
    """The parts the lifespan wires in (Redis-backed or in-process)."""

    hub: LiveHub
    locks: DeviceLocks
    presence: PresenceShare | None = None
    component: RedisComponent | None = None
    checks: dict[str, Check] = field(default_factory=dict)


def shared_state(settings: Settings) -> Shared:
    """Redis-backed parts when FLEETCORE_REDIS_URL is set, in-process ones otherwise."""
    if not settings.redis_url:
        return Shared(hub=InProcessHub(), locks=LocalLocks())
    link = RedisLink(settings.redis_url)
    return Shared(
        hub=RedisHub(link),
        locks=RedisDeviceLocks(link),
        presence=RedisPresence(link),
        component=RedisComponent(link, CredentialInvalidation(link)),
        checks={"redis": link.ready},
    )
