"""Devices on an external broker: ingest through shared subscriptions, messages back out.

The broker (Mosquitto with dynamic security, EMQX with Fleetcore's HTTP endpoints) owns the
device sessions, authentication and topic ACLs; this process is one of its clients. What a
device said goes to the same device-message layer the embedded broker and the HTTP routes
use (fleetcore.device_messages), so limits, checks, dead letters and routing are one code path.

Ingest (`consume`):
- Subscriptions are shared (`$share/<group>/...`): the broker hands each message to one
  worker of the group. Only upstream topics are subscribed; the platform's own publishes on
  mounted topics (which share the device's topic names) carry ORIGIN and are skipped.
- Manual acknowledgement: a QoS 1 message is acknowledged once the layer says it is durable
  (telemetry: its batch committed). Refused messages are dead-lettered and acknowledged.
  A write that fails is not acknowledged: the connection is dropped and made again, and the
  broker delivers every unacknowledged message again (storage de-duplicates telemetry by
  device, key and timestamp). Acknowledgements of the old connection are never sent on the
  new one (`_generation`).
- Messages of ORDERED channels (attributes, attribute requests, status) are acknowledged
  unhandled when `ordered_lane` is set: one process of the group takes them all, in order,
  on a connection of its own (fleetcore.external_broker.lane).
- The session is persistent under a stable client id (`fleetcore-ingest-<id>`): Mosquitto
  2.0 keeps a member's unacknowledged and queued messages in its session and gives them to
  that session only (measured: they are not moved to the other members), so a worker that
  dies must come back under the same id (a supervisor restarts it) to hand them on.
- The paho-mqtt network loop runs in its own thread; messages cross to the event loop in
  batches (one wake-up per batch, not per message).

Outbound: commands, desired configuration and ThingsBoard replies are published on the
device's topics: native ones directly, ThingsBoard ones on its mount (`tb/<id>/...`), which the
broker delivers to that client alone. Which family a device uses is learnt from its traffic
in this process; until then a command goes out on both (a device subscribes to one).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import deque
from collections.abc import Awaitable
from typing import Any, Literal

import orjson
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from sqlalchemy.exc import SQLAlchemyError

from fleetcore.config import Settings
from fleetcore.device_messages.acl import PLATFORM_CLIENT_ID_PREFIX
from fleetcore.device_messages.inbound import DeviceMessages
from fleetcore.device_messages.metrics import MESSAGES_IN, MESSAGES_OUT
from fleetcore.device_messages.sessions import DeviceSession
from fleetcore.devices import auth_cache
from fleetcore.errors import Unavailable
from fleetcore.external_broker import metrics
from fleetcore.external_broker.connection import BrokerUrl
from fleetcore.external_broker.directory import DeviceDirectory
from fleetcore.ops.readiness import NotReady
from fleetcore_protocol import topics
from fleetcore_protocol.messages import Family, OutboundMessage, encode
from fleetcore_protocol.topics import Channel, TopicError

log = structlog.get_logger(__name__)

# The user property on everything the platform publishes; a worker skips such messages.
ORIGIN = ("fleetcore-origin", "platform")
ONLINE_WINDOW_S = 600.0  # a device heard from this recently counts as reachable
# Short: Mosquitto 2.0 does not keep shared subscriptions over a restart, and until the
# workers subscribe again it acknowledges device messages and drops them (measured).
RECONNECT_MIN_S, RECONNECT_MAX_S = 1.0, 3.0
# Failures that mean "not stored, try again later": the message is delivered again.
RETRYABLE = (SQLAlchemyError, OSError, Unavailable, TimeoutError)
LANE: Literal["lane"] = "lane"  # a shared member's mark: an ordered message, the lane's
STOP_TIMEOUT_S = 15.0  # a stopping worker's wait for what it received to be stored


def upstream_filters(group: str) -> list[str]:
    """The shared subscriptions of an ingest worker: every upstream native topic, command
    results, and under the ThingsBoard mounts everything of v1/devices/me and the OTA chunk
    requests (v2/fw and v2/sw; their responses go down and are never subscribed)."""
    native = [
        f"{topics.NATIVE_PREFIX}/+/{channel.value}"
        for channel in sorted(topics.UPSTREAM)
        if channel is not Channel.COMMAND_RESULT
    ]
    native.append(f"{topics.NATIVE_PREFIX}/+/commands/+/result")
    mounted = [f"{topics.MOUNT_PREFIX}/+/{topics.THINGSBOARD_PREFIX}/#"]
    mounted += [f"{topics.MOUNT_PREFIX}/+/{prefix}request/#" for prefix in topics.OTA_PREFIXES]
    notices = f"{topics.SUBSCRIBED_NOTICE_PREFIX}/+"
    return [f"$share/{group}/{topic_filter}" for topic_filter in [*native, *mounted, notices]]


def default_ingest_id(settings: Settings) -> str:
    """A worker id stable across restarts of the same process slot: host and HTTP port."""
    return f"{socket.gethostname()}-{settings.port}"


class ExternalTransport:
    """The platform's client of the external broker: DeviceTransport and DeviceOutbox."""

    name = "mqtt-external"
    connected_gauge = metrics.CONNECTED
    reconnects = True  # paho connects again after a connection ends

    def __init__(
        self,
        settings: Settings,
        messages: DeviceMessages,
        *,
        consume: bool,
        ingest_id: str | None = None,
        ordered_lane: bool = False,
        of: ExternalTransport | None = None,
    ) -> None:
        """`of`: another connection of this process (the ordered lane's is the transport's)
        that shares what this one learns of devices: directory, sessions, families, heard."""
        self.settings = settings
        self.url = BrokerUrl.from_settings(settings)
        self.messages = messages
        self.consume = consume
        self.group = settings.mqtt_share_group
        self.session_expiry_s = settings.mqtt_ingest_session_expiry_s
        self.receive_maximum = settings.mqtt_ingest_inflight
        worker = ingest_id or settings.mqtt_ingest_id or default_ingest_id(settings)
        self.client_id = f"{PLATFORM_CLIENT_ID_PREFIX}ingest-{worker}" if consume else None
        self.ordered_lane = ordered_lane  # ORDERED channels are the lane's (see lane.py)
        self.refused = False  # the broker refused a subscription (its ACL)
        self.client: paho.Client | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inbox: deque[paho.MQTTMessage] = deque()
        self._inbox_lock = threading.Lock()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._generation = 0  # bumped at every connection loss: older acks are void
        self._in_flight = 0  # received, handed to the layer, not yet durable
        self._owed = False  # a message of this connection was not stored: keep the session
        self._notices: set[asyncio.Future[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._bouncing: asyncio.Task[None] | None = None
        self._stopping = False
        if of is None:
            self.directory = DeviceDirectory(messages.database)
            self._sessions: dict[str, DeviceSession] = {}
            self._families: dict[str, Family] = {}
            self._heard: dict[str, float] = {}
            self._stop_listening = auth_cache.on_invalidate(self._sessions.clear)
        else:  # one device lane and rate bucket per device in the process; `of` closes them
            self.directory, self._sessions = of.directory, of._sessions
            self._families, self._heard = of._families, of._heard
        self._owns_devices = of is None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Connect (in the background if the broker is not up yet) and start consuming."""
        self.messages.attach(self)
        await self._open()

    async def _open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._runner = self._loop.create_task(self._run())
        self._connect()
        try:
            await asyncio.wait_for(self._connected.wait(), timeout=5)
        except TimeoutError:
            log.warning("mqtt_external_not_connected", broker=str(self.url))

    async def stop(self) -> None:
        """Leave the group cleanly: unsubscribe, settle what was received (acknowledged once
        durable), then end the session, so the broker routes nothing more to this id."""
        self._stopping = True
        if self.consume:
            await self._drain(leave=True)
        await self.messages.detach()
        properties = _properties(PacketTypes.DISCONNECT)
        properties.SessionExpiryInterval = 0  # nothing is left for a next session
        # Ended only when everything received was acknowledged; else the broker keeps
        # the session (and delivers the rest again to this id's next start).
        done = self._quiet() and not self._owed
        await self._close(properties if done else None)

    async def _close(self, properties: Properties | None) -> None:
        """Disconnect (with these DISCONNECT properties) and stop every task of this one."""
        client, self.client = self.client, None
        if client is not None:
            client.disconnect(properties=properties)
            await asyncio.to_thread(client.loop_stop)
        for task in (self._runner, self._bouncing):
            if task is not None:
                task.cancel()
        if self._owns_devices:
            self._stop_listening()
            self.directory.close()

    async def _drain(self, *, leave: bool) -> None:
        """Unsubscribe first if `leave`; then wait, STOP_TIMEOUT_S at most, until what was
        received is handled and durable (acknowledged, or owed)."""
        client = self.client
        if client is None or not self._connected.is_set():
            return
        try:
            async with asyncio.timeout(STOP_TIMEOUT_S):
                if leave:
                    unsubscribed = asyncio.Event()
                    client.on_unsubscribe = lambda *_: self._call(unsubscribed.set)
                    client.unsubscribe(self.filters())
                    await unsubscribed.wait()
                await self._settle()
        except TimeoutError:
            log.warning(
                "mqtt_external_stop_unsettled", client_id=self.client_id, in_flight=self._in_flight
            )

    async def _settle(self) -> None:
        while not self._quiet():
            self._wake.set()
            await asyncio.sleep(0.01)

    def _quiet(self) -> bool:
        """Nothing received is waiting to be handled or to become durable."""
        with self._inbox_lock:
            waiting = len(self._inbox)
        return waiting == 0 and self._in_flight == 0

    def _connect(self) -> None:
        client = self.url.client(
            "ingest" if self.consume else "api",
            client_id=self.client_id,
            manual_ack=self.consume,
            reconnect=self.reconnects,
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message if self.consume else None
        client.on_subscribe = self._on_subscribe
        client.reconnect_delay_set(int(RECONNECT_MIN_S), int(RECONNECT_MAX_S))
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = self.session_expiry_s if self.consume else 0
        properties.ReceiveMaximum = self.receive_maximum
        client.connect_async(
            self.url.host,
            self.url.port,
            keepalive=30,
            clean_start=not self.consume,
            properties=properties,
        )
        self.client = client
        client.loop_start()

    async def ready(self) -> None:
        """Connected to the broker (and, for a worker, subscribed)."""
        if not self._connected.is_set():
            raise NotReady(f"not connected to the MQTT broker {self.url}")
        if self.consume and not self._subscribed.is_set():
            raise NotReady("not yet subscribed to device topics")
        if self.refused:
            raise NotReady(f"the broker refused a subscription of {self.client_id}: see its ACL")

    async def wait_ready(self, within_s: float = 10.0) -> None:
        """Wait until ready() passes (tests, the CLI); TimeoutError if it does not."""
        async with asyncio.timeout(within_s):
            await self._connected.wait()
            if self.consume:
                await self._subscribed.wait()

    def filters(self) -> list[str]:
        """What this connection subscribes to when it consumes."""
        return upstream_filters(self.group)

    def subscribe_options(self) -> SubscribeOptions:
        """How: QoS 1 (acknowledged once durable)."""
        return SubscribeOptions(qos=1)

    # -- paho's thread -----------------------------------------------------------------

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        if reason.is_failure:
            log.warning("mqtt_external_refused", broker=str(self.url), reason=str(reason))
            return
        if self.consume:
            # Even when the session is present: Mosquitto 2.0 does not save shared
            # subscriptions, so a restarted broker resumes the session without them.
            options = self.subscribe_options()
            self.refused = False  # asked again on this connection (an ACL may have changed)
            client.subscribe([(f, options) for f in self.filters()])
            self._call(self._subscribed.set)
        self._call(self._connected.set)
        self.connected_gauge.set(1)
        log.info("mqtt_external_connected", broker=str(self.url), client_id=self.client_id)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any
    ) -> None:
        self.connected_gauge.set(0)
        self._call(self._lost)
        if not self._stopping:
            log.warning("mqtt_external_disconnected", reason=str(reason))

    def _on_subscribe(
        self, _c: paho.Client, _u: Any, _mid: int, codes: list[ReasonCode], _p: Any
    ) -> None:
        if any(code.is_failure for code in codes):
            self.refused = True
            log.error(
                "mqtt_external_subscription_refused",
                client_id=self.client_id,
                filters=self.filters(),
                reasons=[str(code) for code in codes],
            )

    def _on_message(self, _c: paho.Client, _u: Any, message: paho.MQTTMessage) -> None:
        with self._inbox_lock:
            first = not self._inbox
            self._inbox.append(message)
        if first:
            self._call(self._wake.set)

    def _call(self, callback: Any) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(callback)

    def _lost(self) -> None:
        self._generation += 1
        self._owed = False  # the next session gets every unacknowledged message again
        self._connected.clear()
        self._subscribed.clear()

    # -- the event loop: inbound -------------------------------------------------------

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            with self._inbox_lock:
                batch = list(self._inbox)
                self._inbox.clear()
            if batch:
                await self._take(batch, self._generation)

    async def _take(self, batch: list[paho.MQTTMessage], generation: int) -> None:
        senders: list[tuple[paho.MQTTMessage, str, str] | Literal["lane"] | None] = []
        devices: dict[str, auth_cache.IngestDevice | None] = {}
        unknown: set[str] = set()
        for message in batch:
            notice = topics.subscribed_notice(message.topic)
            try:
                key, topic = (notice, "") if notice else topics.sender(message.topic)
            except TopicError:
                senders.append(None)
                continue
            if self.ordered_lane and topics.ordered(topic):
                senders.append(LANE)  # the lane's connection takes it (lane.py)
                continue
            senders.append((message, key, topic))
            hit, device = self.directory.cached(key)
            if hit:
                devices[key] = device
            else:
                unknown.add(key)
        if unknown:
            try:
                # This batch uses these answers even if the cache is cleared meanwhile.
                devices.update(await self.directory.load(unknown))
            except RETRYABLE:
                log.exception("mqtt_external_lookup_failed")
                self._owed = True
                self._retry_later(generation)  # nothing of this batch is acknowledged
                return
        for message, sent in zip(batch, senders, strict=True):
            MESSAGES_IN.inc()
            metrics.RECEIVED.inc()
            if _from_platform(message):
                self._ack(message, generation)
            elif isinstance(sent, str):  # LANE
                metrics.LANE_SKIPPED.inc()
                self._ack(message, generation)
            elif sent is None:
                self._refuse(
                    message, "unknown_topic", "not a device topic of this platform", generation
                )
            elif not sent[2]:  # the broker's notice: the device subscribed to this filter
                self._device_subscribed(message, devices[sent[1]], generation)
            else:
                _, key, topic = sent
                self._deliver(message, key, topic, devices[key], generation)

    def _deliver(
        self,
        message: paho.MQTTMessage,
        key: str,
        topic: str,
        device: auth_cache.IngestDevice | None,
        generation: int,
    ) -> None:
        if device is None:
            self._refuse(message, "unknown_device", "no enabled device has this id", generation)
            return
        now = time.monotonic()
        back = self._heard.get(key, -ONLINE_WINDOW_S) < now - ONLINE_WINDOW_S
        self._heard[key] = now
        if topic.startswith((topics.THINGSBOARD_PREFIX + "/", *topics.OTA_PREFIXES)):
            self._families[key] = Family.THINGSBOARD
        else:
            self._families.setdefault(key, Family.NATIVE)
        if back:
            self._reachable(device, self._families[key])
        verdict = self.messages.receive(
            self._session(device), topic, bytes(message.payload), qos=message.qos
        )
        if verdict is None or isinstance(verdict, int):
            self._ack(message, generation)
            return
        self._ack_when_durable(message, verdict, generation)

    def _ack_when_durable(
        self, message: paho.MQTTMessage, verdict: Awaitable[object], generation: int
    ) -> None:
        future = asyncio.ensure_future(verdict)
        self._in_flight += 1

        def settled(done: asyncio.Future[object]) -> None:
            self._in_flight -= 1
            if done.cancelled():
                self._retry_later(generation)
                return
            error = done.exception()
            if error is None:
                self._ack(message, generation)
            elif isinstance(error, RETRYABLE):
                self._owed = True
                self._retry_later(generation)
            else:  # a defect, not an outage: delivering it again would fail the same way
                self._refuse(message, "internal_error", type(error).__name__, generation)

        future.add_done_callback(settled)

    def _device_subscribed(
        self, message: paho.MQTTMessage, device: auth_cache.IngestDevice | None, generation: int
    ) -> None:
        """A mounted (ThingsBoard) device subscribed: send what waits for it, as the embedded
        broker does on a subscription."""
        self._ack(message, generation)
        if device is None:
            return
        self._families[str(device.id)] = Family.THINGSBOARD
        # Listening counts as reachable: shared-attribute changes (an OTA assignment) are
        # pushed to it before it has published anything.
        self._heard[str(device.id)] = time.monotonic()
        topic_filter = bytes(message.payload).decode(errors="replace")
        self._notify(self.messages.subscribed(device, topic_filter))

    def _notify(self, notice: Awaitable[None]) -> None:
        task = asyncio.ensure_future(notice)
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    def _reachable(self, device: auth_cache.IngestDevice, family: Family) -> None:
        """A device heard from after a silence: no broker tells us it subscribed, so take its
        traffic as the sign that it listens on its commands topic (commands waiting for it
        go out, as on the embedded broker's subscription)."""
        commands = (
            topics.native(str(device.id), Channel.COMMANDS)
            if family is Family.NATIVE
            else f"{topics.TB_RPC_REQUEST}+"
        )
        self._notify(self.messages.subscribed(device, commands))

    def _session(self, device: auth_cache.IngestDevice) -> DeviceSession:
        key = str(device.id)
        session = self._sessions.get(key)
        if session is None or session.device != device:
            session = self._sessions[key] = self.messages.session(device, token_hash="")
        return session

    def _refuse(self, message: paho.MQTTMessage, reason: str, detail: str, generation: int) -> None:
        self.messages.dead_letters.record(
            organization_id=None,
            device_id=None,
            transport="mqtt",
            topic=message.topic[:512],
            reason=reason,
            detail=detail,
            payload=bytes(message.payload),
            source="external-broker",
        )
        # The connection the message came on: on a later one its packet id may be another's.
        self._ack(message, generation)

    def _ack(self, message: paho.MQTTMessage, generation: int) -> None:
        client = self.client
        if message.qos == 0 or client is None or generation != self._generation:
            return  # QoS 0 needs none; an older connection's message comes again
        client.ack(message.mid, message.qos)
        metrics.ACKED.inc()

    def _retry_later(self, generation: int) -> None:
        """Not stored: drop the connection so the broker delivers what is unacknowledged
        again, after a pause (once per connection)."""
        if generation != self._generation or self._stopping:
            return
        if self._bouncing is None or self._bouncing.done():
            assert self._loop is not None
            self._bouncing = self._loop.create_task(self._bounce())

    async def _bounce(self) -> None:
        metrics.REDELIVERIES.inc()
        self._lost()
        client = self.client
        if client is not None:
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)
        with self._inbox_lock:
            self._inbox.clear()  # delivered again on the next connection
        log.warning("mqtt_external_redelivery", pause_s=RECONNECT_MIN_S)
        await asyncio.sleep(RECONNECT_MIN_S)
        if not self._stopping:
            self._connect()

    # -- outbound ----------------------------------------------------------------------

    def send(self, recipient: str, message: OutboundMessage) -> Family | None:
        """Publish to the device's topics; the family used first (None if not connected or
        the recipient has no topics here, e.g. a provisioning client)."""
        client = self.client
        if client is None or not self._connected.is_set() or recipient.startswith("provision:"):
            return None
        learnt = self._families.get(recipient)
        families = (learnt,) if learnt in message.families else message.families
        properties = _properties(PacketTypes.PUBLISH)
        properties.UserProperty = [ORIGIN]
        sent: Family | None = None
        for family in families:
            assert family is not None
            encoded = encode(message, recipient, family, dumps=orjson.dumps)
            if encoded is None:
                continue
            topic, payload = encoded
            if family is Family.THINGSBOARD:
                topic = topics.mount(recipient, topic)
            client.publish(topic, payload, qos=1, retain=message.retain, properties=properties)
            MESSAGES_OUT.inc()
            sent = sent or family
        return sent

    def online(self) -> set[str]:
        """Devices heard from by this process recently (the broker holds the sessions)."""
        horizon = time.monotonic() - ONLINE_WINDOW_S
        return {key for key, at in self._heard.items() if at >= horizon}

    async def disconnect(self, device_id: Any) -> int:
        """Sessions live in the broker: credentials sync disables the client there."""
        return 0


def _from_platform(message: paho.MQTTMessage) -> bool:
    properties = getattr(message, "properties", None)
    pairs = getattr(properties, "UserProperty", None) or []
    return ORIGIN in [tuple(pair) for pair in pairs]


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]
