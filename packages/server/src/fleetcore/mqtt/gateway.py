"""The embedded broker's MQTT sessions: who the clients are and what they may subscribe to.
The broker (fleetcore.mqtt.broker) moves packets; this decides who is let in, and hands every
message to the device-message layer (fleetcore.device_messages), which decides the rest.

- Authentication: username = device token (ThingsBoard style), or username = device id and
  password = token; username "provision" opens a provisioning-only connection.
- ACL: a device subscribes only to filters that can match nothing but its own topics (what
  it may publish is the layer's check, the same for every transport). Nothing a device
  publishes reaches another client.
- Provisioning ("provision", no password) costs a token of its client address's bucket per
  connect (and per request: the layer), and its connection is provisional: the broker counts
  it apart and closes it after a short lifetime (fleetcore.mqtt.limits).
- Credentials rotated or revoked, devices disabled or deleted: live sessions are re-checked.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Sequence

import orjson
import structlog
from sqlalchemy import select

from fleetcore.auth.security import token_hash
from fleetcore.db import Database
from fleetcore.device_messages import metrics as message_metrics
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.device_messages.sessions import DeviceSession, Provisioner
from fleetcore.devices import auth_cache
from fleetcore.devices.models import Device, DeviceCredential, DeviceStatus
from fleetcore.errors import DomainError
from fleetcore.mqtt import metrics, mqtt5
from fleetcore.mqtt.broker import (
    BAD_USERNAME_PASSWORD,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    ClientInfo,
    FleetBroker,
    Inbound,
    Principal,
    Refused,
)
from fleetcore.mqtt.hooks import Verdict
from fleetcore.mqtt.limits import ProvisioningLimits, address_of
from fleetcore_protocol import messages, topics
from fleetcore_protocol.topics import Channel, topic_matches

log = structlog.get_logger(__name__)

PROVISION_USERNAME = "provision"


def _native_device_prefix(device_id: str) -> str:
    return f"{topics.NATIVE_PREFIX}/{device_id}/"


class MqttGateway:
    """The broker's hooks: authentication, ACL, and every message to the layer."""

    def __init__(
        self,
        database: Database,
        messages: DeviceMessages,
        *,
        provisioning: ProvisioningLimits | None = None,
    ) -> None:
        self.database = database
        self.messages = messages
        self.provisioning = provisioning or ProvisioningLimits()
        self._provisioning_rate = self.provisioning.buckets()
        self.broker: FleetBroker | None = None
        self._recheck: asyncio.Task[None] | None = None
        self._recheck_again = False
        self._stop_listening: list[Callable[[], None]] = []

    # -- lifecycle ---------------------------------------------------------------------

    def attach(self, broker: FleetBroker) -> None:
        """Start hearing of credential changes for this broker."""
        self.broker = broker
        self._stop_listening = [auth_cache.on_invalidate(self._credentials_changed)]

    async def detach(self) -> None:
        """Stop listening."""
        for stop in self._stop_listening:
            stop()
        self._stop_listening = []

    # -- authentication ----------------------------------------------------------------

    async def authenticate(self, client: ClientInfo) -> Principal:
        """A device by its token (username, or password with the device id as username)."""
        if client.username == PROVISION_USERNAME and not client.password:
            address = address_of(client.remote)
            if not self._provisioning_rate.take(address):
                metrics.CONNECTIONS_REFUSED.labels("provisioning_rate").inc()
                raise Refused(mqtt5.CONNECTION_RATE_EXCEEDED, "provisioning too often")
            return Provisioner(address, self.provisioning.session_s, self._provisioning_rate)
        token, claimed_id = _credentials(client)
        if not token:
            raise Refused(NOT_AUTHORIZED, "no device token")
        try:
            async with self.database.session() as session:
                device = await auth_cache.ingest_device(session, token)  # the HTTP path's lookup
        except DomainError:
            metrics.CONNECTIONS_REFUSED.labels("bad_credentials").inc()
            raise Refused(BAD_USERNAME_PASSWORD, "token not valid") from None
        except Exception:
            log.exception("mqtt_authentication_failed")
            raise Refused(SERVER_UNAVAILABLE, "database unavailable") from None
        if claimed_id is not None and claimed_id != str(device.id):
            metrics.CONNECTIONS_REFUSED.labels("bad_credentials").inc()
            raise Refused(BAD_USERNAME_PASSWORD, "token of another device")
        return self.messages.session(device, token_hash(token))

    # -- ACL ---------------------------------------------------------------------------

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        """Only filters that can match nothing but this principal's own downstream topics."""
        if isinstance(principal, Provisioner):
            return topic_filter == topics.PROVISION_RESPONSE
        allowed = topic_filter.startswith(
            (_native_device_prefix(principal.key), topics.THINGSBOARD_PREFIX + "/")
        )
        if not allowed:
            message_metrics.ACL_DENIED.labels("subscribe").inc()
        return allowed

    # -- messages ----------------------------------------------------------------------

    def accept(self, principal: Principal, message: Inbound) -> Verdict:
        """Hand one message to the layer; the returned awaitable completes once durable."""
        message_metrics.MESSAGES_IN.inc()
        if isinstance(principal, Provisioner):
            return self.messages.receive_provisioning(principal, message.topic, message.payload)
        assert isinstance(principal, DeviceSession)
        return self.messages.receive(
            principal, message.topic, message.payload, qos=message.qos, will=message.will
        )

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        """The desired configuration, for a device subscribing to its config topic."""
        if not isinstance(principal, DeviceSession):
            return []
        config_topic = topics.native(principal.key, Channel.CONFIG)
        if not topic_matches(config_topic, topic_filter):
            return []
        config = await self.messages.desired_config(principal.device.id)
        encoded = messages.encode(config, principal.key, messages.Family.NATIVE, dumps=orjson.dumps)
        return [] if encoded is None else [encoded]

    # -- connections -------------------------------------------------------------------

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        """Count the connection; tell the layer."""
        metrics.CONNECTED.inc()
        if isinstance(principal, DeviceSession):
            await self.messages.connected(principal.device)

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        """Count the disconnection; tell the layer."""
        metrics.CONNECTED.dec()
        if isinstance(principal, DeviceSession):
            await self.messages.disconnected(principal.device, abnormal=abnormal)

    async def subscribed(self, principal: Principal, topic_filter: str) -> None:
        """Tell the layer (the commands service sends what waits for this device)."""
        if isinstance(principal, DeviceSession):
            await self.messages.subscribed(principal.device, topic_filter)

    def _credentials_changed(self) -> None:
        # Tokens rotated or revoked, devices disabled or deleted: re-check live sessions.
        # A change during a running check makes it run once more (never skipped).
        if self.broker is None:
            return
        self._recheck_again = True
        if self._recheck is None or self._recheck.done():
            self._recheck = asyncio.get_running_loop().create_task(self._recheck_until_settled())

    async def _recheck_until_settled(self) -> None:
        while self._recheck_again:
            self._recheck_again = False
            try:
                await self.recheck_sessions()
            except Exception:
                log.exception("mqtt_recheck_failed")

    async def recheck_sessions(self) -> int:
        """Drop every connection whose token is no longer valid; returns how many devices."""
        assert self.broker is not None
        live = [p for p in self.broker.principals() if isinstance(p, DeviceSession)]
        if not live:
            return 0
        hashes = {p.token_hash for p in live}
        async with self.database.session() as session:
            valid = set(
                await session.scalars(
                    select(DeviceCredential.token_hash)
                    .join(Device, Device.id == DeviceCredential.device_id)
                    .where(
                        DeviceCredential.token_hash.in_(hashes),
                        DeviceCredential.revoked_at.is_(None),
                        Device.deleted_at.is_(None),
                        Device.status != DeviceStatus.DISABLED,
                    )
                )
            )
        revoked = {p.key for p in live if p.token_hash not in valid}
        for key in revoked:
            log.info("mqtt_session_revoked", device_id=key)
            await self.broker.drop(key)
        return len(revoked)


def _credentials(client: ClientInfo) -> tuple[str | None, str | None]:
    """(token, claimed device id) from a CONNECT's username and password."""
    if client.password:
        try:
            return client.password, str(uuid.UUID(client.username or ""))
        except ValueError:
            return client.password if not client.username else client.username, None
    return client.username, None
