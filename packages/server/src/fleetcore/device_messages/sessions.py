"""Who sends device messages: an authenticated device, or a client asking to be provisioned."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from fleetcore.buckets import KeyedBuckets, TokenBucket
from fleetcore.devices import auth_cache


@dataclass(slots=True, eq=False)
class DeviceSession:
    """A device connected with a valid token, with its limits (one bucket per device)."""

    device: auth_cache.IngestDevice
    token_hash: str
    max_payload: int
    bucket: TokenBucket
    key: str = ""
    lane: asyncio.Lock = field(default_factory=asyncio.Lock)
    # Held while the plan's message window is asked (fleetcore.plans.quota): keeps order.
    quota_lane: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.key = str(self.device.id)


@dataclass(slots=True, eq=False)
class Provisioner:
    """A client that connected as "provision": it may only ask for credentials, for a while
    (provisional: see fleetcore.mqtt.hooks.Provisional)."""

    address: str
    lifetime_s: float
    rate: KeyedBuckets  # per client address, spent by each connect and each request
    key: str = field(default_factory=lambda: f"provision:{uuid.uuid4()}")
