"""Who a broker lets in and what they may do: the device rules of the embedded broker
(fleetcore.device_messages.acl), a platform client, and a short cache of the answers.

- Devices: token as username, or device id as username and token as password; the
  provisioning user ("provision", no password). A device touches only its own topics, and
  device ids are global, so a device of one organization never reaches another's topics.
- The platform's own client (FLEETCORE_BROKER_AUTH_PLATFORM_USERNAME, the shared secret
  as password) may hold $share/<FLEETCORE_MQTT_SHARE_GROUP>/... subscriptions and the
  ordered lane's (fleetcore.external_broker.lane), and publish to down topics.
- Answers are cached for FLEETCORE_BROKER_AUTH_CACHE_S, keyed by a hash of what was asked
  (never the raw token), and forgotten when device credentials change in this process; a
  change made by another process is seen once the entry expires.
- Failed authentications cost a token of the client address's bucket (EMQX sends it).
- Client ids starting `fleetcore-` are the platform's (acl.PLATFORM_CLIENT_ID_PREFIX): any
  other client connecting with one is refused, so no device can take a worker's session.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Literal

import structlog
from prometheus_client import Counter
from sqlalchemy import select

from fleetcore.buckets import KeyedBuckets
from fleetcore.config import Settings
from fleetcore.db import Database
from fleetcore.device_messages import acl
from fleetcore.device_messages.metrics import ACL_DENIED
from fleetcore.devices import auth_cache
from fleetcore.devices.deps import authenticate_device
from fleetcore.devices.models import Device, DeviceStatus
from fleetcore.errors import DomainError
from fleetcore_protocol import topics
from fleetcore_protocol.topics import TopicError

log = structlog.get_logger(__name__)

CHECKS = Counter(
    "fleetcore_broker_auth_checks_total",
    "External broker authentication and authorization answers.",
    ["check", "result"],
)
CACHE = Counter(
    "fleetcore_broker_auth_cache_total", "Broker auth answers from the cache or not.", ["outcome"]
)
FAILURES_PER_MIN = 30.0  # per client address, after a burst of FAILURE_BURST
FAILURE_BURST = 10
MAX_ENTRIES = 100_000

Action = Literal["publish", "subscribe"]
Kind = Literal["device", "provisioner", "platform"]


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a broker client is: a device (by id), a provisioning client, or the platform."""

    kind: Kind
    device_id: str | None = None


_instances: weakref.WeakSet[BrokerAuth] = weakref.WeakSet()


def _forget_all() -> None:
    for instance in list(_instances):
        instance.forget()


auth_cache.on_invalidate(_forget_all)  # credentials changed in this process: ask again


class BrokerAuth:
    """The decisions behind the broker endpoints, one per application."""

    def __init__(self, database: Database, settings: Settings) -> None:
        self.database = database
        self.cache_s = settings.broker_auth_cache_s
        secret = settings.broker_auth_secret
        self._secret = secret.get_secret_value().encode() if secret is not None else None
        self.platform_username = settings.broker_auth_platform_username
        self.shared_group = f"$share/{settings.mqtt_share_group}/"  # the ingest workers'
        self._answers: dict[bytes, tuple[float, Identity | None]] = {}
        self._failures = KeyedBuckets(FAILURES_PER_MIN / 60, FAILURE_BURST)
        self._blocked: dict[str, float] = {}
        _instances.add(self)

    def forget(self) -> None:
        """Drop every cached answer."""
        self._answers.clear()

    # -- authentication ----------------------------------------------------------------

    async def authenticate(
        self, *, username: str, password: str, clientid: str, peer: str | None
    ) -> Identity | None:
        """The client these credentials name, or None to refuse the connection."""
        if peer is not None and self._blocked.get(peer, 0.0) > time.monotonic():
            CHECKS.labels("authn", "rate_limited").inc()
            return None
        key = _key("authn", username, password, clientid)
        hit, found = self._cached(key)
        if not hit:
            found = await self._identify(username, password)
            if found is not None and found.kind != "platform" and _reserved(clientid):
                found = None  # a device (or provisioner) posing as one of the platform's clients
            self._remember(key, found)
        CHECKS.labels("authn", "allow" if found else "deny").inc()
        if found is None:
            log.info("broker_authentication_refused", peer=peer)
            if peer is not None:
                self._note_failure(peer)
        return found

    async def _identify(self, username: str, password: str) -> Identity | None:
        if username == self.platform_username:
            ok = self._secret is not None and hmac.compare_digest(password.encode(), self._secret)
            return Identity("platform") if ok else None
        if username == acl.PROVISION_USERNAME and not password:
            return Identity("provisioner")
        token, claimed_id = acl.credentials(username, password)
        if not token:
            return None
        try:
            async with self.database.session() as session:
                device = await authenticate_device(session, token)
        except DomainError:
            return None
        if claimed_id is not None and claimed_id != str(device.id):
            return None
        return Identity("device", str(device.id))

    # -- authorization -----------------------------------------------------------------

    async def authorize(self, *, username: str, topic: str, action: Action) -> bool:
        """Whether the client with this username may publish or subscribe to `topic`."""
        if username == self.platform_username:
            allowed = _platform_may(action, topic, self.shared_group)
        elif username == acl.PROVISION_USERNAME:
            allowed = acl.provisioner_may(action, topic)
        else:
            key = _key("authz", username)
            hit, device = self._cached(key)
            if not hit:
                device = await self._live_device(username)
                self._remember(key, device)
            allowed = device is not None and _device_may(device.device_id or "", action, topic)
        CHECKS.labels("authz", "allow" if allowed else "deny").inc()
        if not allowed:
            ACL_DENIED.labels(action).inc()
        return allowed

    async def _live_device(self, username: str) -> Identity | None:
        """The enabled, undeleted device a connected client's username names (its id, or
        its token: a rotated token is refused from here on)."""
        try:
            device_id = uuid.UUID(username)
        except ValueError:
            device_id = None
        async with self.database.session() as session:
            if device_id is None:
                try:
                    device = await authenticate_device(session, username)
                except DomainError:
                    return None
                return Identity("device", str(device.id))
            live = await session.scalar(
                select(Device.id).where(
                    Device.id == device_id,
                    Device.deleted_at.is_(None),
                    Device.status != DeviceStatus.DISABLED,
                )
            )
        return Identity("device", str(live)) if live is not None else None

    # -- cache and limits --------------------------------------------------------------

    def _cached(self, key: bytes) -> tuple[bool, Identity | None]:
        """(whether the answer was cached, the answer)."""
        hit = self._answers.get(key)
        if hit is not None and hit[0] > time.monotonic():
            CACHE.labels("hit").inc()
            return True, hit[1]
        CACHE.labels("miss").inc()
        return False, None

    def _remember(self, key: bytes, answer: Identity | None) -> None:
        if self.cache_s <= 0:
            return
        if len(self._answers) >= MAX_ENTRIES:
            self._answers.clear()
        self._answers[key] = (time.monotonic() + self.cache_s, answer)

    def _note_failure(self, peer: str) -> None:
        if not self._failures.take(peer):
            if len(self._blocked) >= MAX_ENTRIES:
                self._blocked.clear()
            self._blocked[peer] = time.monotonic() + 60 / FAILURES_PER_MIN


def _key(*parts: str) -> bytes:
    """A digest of what was asked: the cache never holds a raw token."""
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "surrogatepass")).digest()


def _device_may(device_key: str, action: Action, topic: str) -> bool:
    if action == "publish":
        return acl.may_publish(device_key, topic)
    return acl.may_subscribe(device_key, topic)


_LANE_FILTERS = frozenset(topics.ordered_filters())


def _reserved(clientid: str) -> bool:
    return clientid.startswith(acl.PLATFORM_CLIENT_ID_PREFIX)


def _platform_may(action: Action, topic: str, shared_group: str) -> bool:
    """The platform's client: shared subscriptions of its group, and the ordered lane's
    filters (fleetcore.external_broker.lane); publishes down topics."""
    if action == "subscribe":
        if topic in _LANE_FILTERS:
            return True
        return topic.startswith(shared_group) and len(topic) > len(shared_group)
    if "+" in topic or "#" in topic:
        return False
    if f"{topics.THINGSBOARD_PREFIX}/" in topic or topic.endswith(topics.PROVISION_RESPONSE):
        return True  # ThingsBoard replies, under the broker's per-client mount
    if topic.startswith(topics.MOUNT_PREFIX + "/"):
        try:
            _, inner = topics.unmount(topic)
        except TopicError:
            return False
        return inner.startswith(topics.OTA_PREFIXES)  # OTA chunks and errors, mounted
    try:
        parsed = topics.parse(topic)
    except TopicError:
        return False
    return parsed.device_id is not None and parsed.channel not in topics.UPSTREAM
