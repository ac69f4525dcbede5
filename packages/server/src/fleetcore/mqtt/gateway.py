"""What the platform does with MQTT clients: who they are, what they may do, where their
messages go. The broker (fleetcore.mqtt.broker) moves packets; this decides.

- Authentication: username = device token (ThingsBoard style), or username = device id and
  password = token; username "provision" opens a provisioning-only connection.
- ACL: a device publishes only on its own topics (native topics name it; ThingsBoard topics
  name the connection) and subscribes only to filters that can match nothing but its own
  topics. Nothing a device publishes reaches another client.
- Telemetry goes to the ingest pipeline; the PUBACK waits for the commit. Client
  attributes, events and status are written before the PUBACK too, one at a time per
  device so they keep their order.
- Anything unusable becomes a dead letter (reason, topic, truncated copy) and is
  acknowledged: one bad message never drops the connection.
- Provisioning ("provision", no password) costs a token of its client address's bucket per
  connect and per request, and its connection is provisional: the broker counts it apart
  and closes it after a short lifetime (fleetcore.mqtt.limits).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
import structlog
from sqlalchemy import select

from fleetcore.attributes import service as attributes
from fleetcore.attributes import signals
from fleetcore.attributes.schemas import AttributeScope
from fleetcore.auth.security import token_hash
from fleetcore.buckets import TokenBucket
from fleetcore.db import Database
from fleetcore.deadletters.sink import DeadLetterSink
from fleetcore.devices import auth_cache
from fleetcore.devices.models import Device, DeviceCredential, DeviceStatus
from fleetcore.devices.provisioning import provision
from fleetcore.devices.schemas import ProvisionIn
from fleetcore.errors import DomainError
from fleetcore.events.codec import parse_events
from fleetcore.events.service import record_events
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
    topic_matches,
)
from fleetcore.mqtt.hooks import Verdict
from fleetcore.mqtt.limits import ProvisioningLimits, address_of
from fleetcore.telemetry import metrics as telemetry_metrics
from fleetcore.telemetry.ingest import decode_and_check
from fleetcore.telemetry.pipeline import IngestPipeline, Overloaded
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore_protocol import topics
from fleetcore_protocol.jsonvalue import unstorable
from fleetcore_protocol.topics import Channel, TopicError

log = structlog.get_logger(__name__)

PROVISION_USERNAME = "provision"
_ACCEPTED_MQTT = telemetry_metrics.ACCEPTED.labels("mqtt")
PAYLOAD_FORMAT_INVALID = 0x99
# The MQTT 5 PUBACK reason code for each dead-letter reason (others: payload format invalid).
_REASON_CODES = {
    "not_allowed": 0x87,  # not authorized
    "rate_limited": 0x97,  # quota exceeded
    "unknown_topic": 0x90,  # topic name invalid
    "oversize": 0x83,  # implementation specific: over the profile's payload limit
    "overloaded": 0x80,
    "unknown_method": 0x00,  # answered on the RPC response topic
}
MAX_INFLIGHT = 100  # what getSessionLimits announces


@dataclass(slots=True, eq=False)
class DevicePrincipal:
    """A device connected with a valid token."""

    device: auth_cache.IngestDevice
    token_hash: str
    max_payload: int
    bucket: TokenBucket
    key: str = ""
    lane: asyncio.Lock = field(default_factory=asyncio.Lock)

    def __post_init__(self) -> None:
        self.key = str(self.device.id)


@dataclass(slots=True, eq=False)
class ProvisioningPrincipal:
    """A client that connected as "provision": it may only ask for credentials, for a while
    (provisional: see fleetcore.mqtt.hooks.Provisional)."""

    address: str
    lifetime_s: float
    key: str = field(default_factory=lambda: f"provision:{uuid.uuid4()}")


def _native_device_prefix(device_id: str) -> str:
    return f"{topics.NATIVE_PREFIX}/{device_id}/"


class DeviceListener(Protocol):
    """What other parts of the platform hear of device connections (status, commands)."""

    async def device_connected(self, device: auth_cache.IngestDevice) -> None:
        """A device's MQTT connection was accepted."""
        ...

    async def device_disconnected(self, device: auth_cache.IngestDevice, *, abnormal: bool) -> None:
        """A device's MQTT connection ended (abnormal: without DISCONNECT; the will fired)."""
        ...

    async def device_subscribed(self, device: auth_cache.IngestDevice, topic_filter: str) -> None:
        """A device's subscription was granted (e.g. to its commands: time to send them)."""
        ...


# A command result from a device: (device, command id, body, ThingsBoard RPC?) -> MQTT 5
# reason code when refused, else None. The commands service provides it.
CommandResults = Callable[
    [auth_cache.IngestDevice, str, dict[str, Any], bool], Awaitable[int | None]
]
# A DEX audit file from a device: (device, payload) -> None once stored (and accounted),
# else the dead letter's (reason, detail). The vending module provides it.
DexUploads = Callable[[auth_cache.IngestDevice, bytes], Awaitable[tuple[str, str] | None]]


class MqttGateway:
    """The broker's hooks: authentication, ACL and routing into the platform."""

    def __init__(
        self,
        database: Database,
        pipeline: IngestPipeline,
        dead_letters: DeadLetterSink,
        *,
        provisioning: ProvisioningLimits | None = None,
    ) -> None:
        self.database = database
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        self.provisioning = provisioning or ProvisioningLimits()
        self._provisioning_rate = self.provisioning.buckets()
        self.broker: FleetBroker | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._buckets: dict[str, TokenBucket] = {}
        self._recheck: asyncio.Task[None] | None = None
        self._recheck_again = False
        self._stop_listening: list[Callable[[], None]] = []
        self.listeners: list[DeviceListener] = []
        self.command_results: CommandResults | None = None
        self.dex_uploads: DexUploads | None = None
        # Called as each device message arrives (presence: online, last seen).
        self.on_traffic: Callable[[auth_cache.IngestDevice], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def attach(self, broker: FleetBroker) -> None:
        """Start hearing of credential and desired-state changes for this broker."""
        self.broker = broker
        self._stop_listening = [
            auth_cache.on_invalidate(self._credentials_changed),
            signals.listen(self._shared_changed),
        ]

    async def detach(self) -> None:
        """Stop listening and wait for work in flight."""
        for stop in self._stop_listening:
            stop()
        self._stop_listening = []
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    # -- authentication ----------------------------------------------------------------

    async def authenticate(self, client: ClientInfo) -> Principal:
        """A device by its token (username, or password with the device id as username)."""
        if client.username == PROVISION_USERNAME and not client.password:
            address = address_of(client.remote)
            if not self._provisioning_rate.take(address):
                metrics.CONNECTIONS_REFUSED.labels("provisioning_rate").inc()
                raise Refused(mqtt5.CONNECTION_RATE_EXCEEDED, "provisioning too often")
            return ProvisioningPrincipal(address, self.provisioning.session_s)
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
        rules = device.profile or auth_cache.ProfileRules.of(None)
        limits = (rules.mqtt_rate_per_s, rules.mqtt_burst)
        # One bucket per device, shared by its connections and kept across reconnects.
        bucket = self._buckets.get(str(device.id))
        if bucket is None or (bucket.rate, bucket.burst) != limits:
            bucket = self._buckets[str(device.id)] = TokenBucket(*limits)
        return DevicePrincipal(
            device=device,
            token_hash=token_hash(token),
            max_payload=rules.max_payload_bytes,
            bucket=bucket,
        )

    # -- ACL ---------------------------------------------------------------------------

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        """Only filters that can match nothing but this principal's own downstream topics."""
        if isinstance(principal, ProvisioningPrincipal):
            return topic_filter == topics.PROVISION_RESPONSE
        allowed = topic_filter.startswith(
            (_native_device_prefix(principal.key), topics.THINGSBOARD_PREFIX + "/")
        )
        if not allowed:
            metrics.ACL_DENIED.labels("subscribe").inc()
        return allowed

    # -- inbound -----------------------------------------------------------------------

    def accept(self, principal: Principal, message: Inbound) -> Verdict:
        """Route one message; the returned awaitable completes once it is durable."""
        metrics.MESSAGES_IN.inc()
        if isinstance(principal, ProvisioningPrincipal):
            if message.topic != topics.PROVISION_REQUEST:
                return self._dead(
                    principal, message, "not_allowed", "a provisioning connection may only ask"
                )
            if not self._provisioning_rate.take(principal.address):
                answer = {"status": "FAILURE", "errorMsg": "too many provisioning requests"}
                self._send(principal, topics.PROVISION_RESPONSE, answer)
                return self._dead(principal, message, "rate_limited", "provisioning too often")
            return self._spawn(self._provision(principal, message.payload))
        assert isinstance(principal, DevicePrincipal)
        if self.on_traffic is not None and not message.will:
            self.on_traffic(principal.device)
        if len(message.payload) > principal.max_payload:
            return self._dead(
                principal,
                message,
                "oversize",
                f"{len(message.payload)} bytes; the profile allows {principal.max_payload}",
            )
        if not message.will and not principal.bucket.take():
            return self._dead(principal, message, "rate_limited", "over the profile's message rate")
        try:
            topic = topics.parse(message.topic)
        except TopicError as exc:
            return self._dead(principal, message, "unknown_topic", str(exc))
        if topic.device_id is not None and topic.device_id != principal.key:
            metrics.ACL_DENIED.labels("publish").inc()
            return self._dead(
                principal, message, "not_allowed", "a device publishes on its own topics"
            )
        if topic.channel not in topics.UPSTREAM:
            metrics.ACL_DENIED.labels("publish").inc()
            return self._dead(principal, message, "not_allowed", "this topic flows to the device")
        return self._route(principal, topic, message)

    def _route(self, principal: DevicePrincipal, topic: topics.Topic, message: Inbound) -> Verdict:
        channel = topic.channel
        if channel is Channel.TELEMETRY:
            return self._telemetry(principal, message)
        if channel is Channel.ATTRIBUTES:
            values = self._json_object(principal, message)
            if values is None:
                return PAYLOAD_FORMAT_INVALID
            return self._in_lane(principal, self._client_attributes(principal, message, values))
        if channel is Channel.COMMAND_RESULT and self.command_results is not None:
            body = self._json_object(principal, message)
            if body is None:
                return PAYLOAD_FORMAT_INVALID
            return self._in_lane(principal, self._command_result(principal, topic, body))
        if channel in (Channel.EVENTS, Channel.STATUS, Channel.COMMAND_RESULT):
            return self._event(principal, topic, message)
        if channel is Channel.ATTRIBUTE_REQUEST:
            request = self._json_object(principal, message)
            if request is None:
                return PAYLOAD_FORMAT_INVALID
            return self._spawn(self._attribute_request(principal, topic, request))
        if channel is Channel.CLIENT_RPC:
            return self._client_rpc(principal, topic, message)
        if channel is Channel.DEX:
            if self.dex_uploads is None:
                return self._dead(principal, message, "unknown_topic", "no DEX audits here")
            return self._in_lane(principal, self._dex(principal, message))
        raise AssertionError(channel)  # pragma: no cover - UPSTREAM is exhaustive

    def _telemetry(self, principal: DevicePrincipal, message: Inbound) -> Verdict:
        device = principal.device
        try:
            checked = decode_and_check(
                message.payload, device.profile, now_ms=int(time.time() * 1000)
            )
        except DomainError as exc:
            return self._dead(principal, message, exc.code.lower(), exc.message)
        if checked.problems:
            detail = "; ".join(f"{p.key or '?'}: {p.code} {p.message}" for p in checked.problems)
            self._dead(principal, message, "rejected_readings", detail)
        if not checked.readings:
            return PAYLOAD_FORMAT_INVALID
        _ACCEPTED_MQTT.inc(len(checked.readings))
        item = DeviceReadings(device.id, device.organization_id, checked.readings)
        try:
            return self.pipeline.enqueue(item)  # resolves after the commit
        except Overloaded:
            if message.qos == 0:
                return self._dead(principal, message, "overloaded", "ingest was full (QoS 0)")
            return self._spawn(self._enqueue_when_room(item))

    async def _enqueue_when_room(self, item: DeviceReadings) -> None:
        # QoS 1 under overload: hold the PUBACK until the pipeline takes the readings.
        delay = 0.05
        while True:
            try:
                await self.pipeline.enqueue(item)
                return
            except Overloaded:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)

    def _json_object(self, principal: DevicePrincipal, message: Inbound) -> dict[str, Any] | None:
        try:
            value = orjson.loads(message.payload)
        except orjson.JSONDecodeError as exc:
            self._dead(principal, message, "malformed_json", f"not JSON: {exc}")
            return None
        if not isinstance(value, dict):
            self._dead(principal, message, "wrong_type", "expected a JSON object")
            return None
        # orjson reads 1,024 levels and writes 254: what cannot be stored again stops here.
        if problem := unstorable(value):
            self._dead(principal, message, "unstorable_json", problem)
            return None
        return value

    async def _client_attributes(
        self, principal: DevicePrincipal, message: Inbound, values: dict[str, Any]
    ) -> None:
        async with self.database.session(write=True) as session:
            device = await session.get(Device, principal.device.id)
            if device is None:
                return
            try:
                await attributes.report_client_attributes(session, device, values=values)
            except DomainError as exc:
                await session.rollback()
                self._dead(principal, message, exc.code.lower(), exc.message)

    def _event(self, principal: DevicePrincipal, topic: topics.Topic, message: Inbound) -> Verdict:
        payload = message.payload
        if topic.channel is Channel.STATUS:
            status = _status_of(payload)
            if status is None:
                return self._dead(
                    principal, message, "wrong_type", 'status is "online" or "offline"'
                )
            payload = orjson.dumps({"type": "status", "data": {"status": status}})
        elif topic.channel is Channel.COMMAND_RESULT:
            result = self._json_object(principal, message)
            if result is None:
                return PAYLOAD_FORMAT_INVALID
            data = {"command_id": topic.command_id, "result": result}
            payload = orjson.dumps({"type": "command_result", "data": data})
        try:
            parsed = parse_events(payload, now_ms=int(time.time() * 1000))
        except DomainError as exc:
            return self._dead(principal, message, exc.code.lower(), exc.message)
        return self._in_lane(principal, self._store_events(principal, parsed))

    async def _command_result(
        self, principal: DevicePrincipal, topic: topics.Topic, body: dict[str, Any]
    ) -> int | None:
        """The commands service's answer: None, or the MQTT 5 reason code for the PUBACK."""
        assert self.command_results is not None
        assert topic.command_id is not None
        return await self.command_results(
            principal.device, topic.command_id, body, topic.device_id is None
        )

    async def _dex(self, principal: DevicePrincipal, message: Inbound) -> int | None:
        """Stored (PUBACK after the commit), or a dead letter when it is no DEX file."""
        assert self.dex_uploads is not None
        refused = await self.dex_uploads(principal.device, message.payload)
        if refused is None:
            return None
        return self._dead(principal, message, *refused)

    async def _store_events(self, principal: DevicePrincipal, parsed: Sequence[Any]) -> None:
        async with self.database.session() as session:
            await record_events(session, principal.device, list(parsed))

    async def _attribute_request(
        self, principal: DevicePrincipal, topic: topics.Topic, request: dict[str, Any]
    ) -> None:
        """ThingsBoard: {"clientKeys": "a,b", "sharedKeys": "c"} -> {"client": {}, "shared": {}}."""
        answer: dict[str, Any] = {}
        async with self.database.session() as session:
            for field_name, scope, out in (
                ("clientKeys", AttributeScope.CLIENT, "client"),
                ("sharedKeys", AttributeScope.SHARED, "shared"),
            ):
                keys = _key_list(request.get(field_name))
                asked = field_name in request or not ({"clientKeys", "sharedKeys"} & request.keys())
                if asked:
                    answer[out] = await attributes.device_values(
                        session, principal.device.id, scope, keys
                    )
        self._send(principal, f"{topics.TB_ATTRIBUTE_RESPONSE}{topic.command_id}", answer)

    def _client_rpc(
        self, principal: DevicePrincipal, topic: topics.Topic, message: Inbound
    ) -> Verdict:
        request = self._json_object(principal, message)
        if request is None:
            return PAYLOAD_FORMAT_INVALID
        reply_topic = f"{topics.TB_RPC_RESPONSE}{topic.command_id}"
        if request.get("method") == "getSessionLimits":
            bucket = principal.bucket
            rate = f"{bucket.burst}:{max(1, round(bucket.burst / bucket.rate))}"
            self._send(
                principal,
                reply_topic,
                {
                    "maxPayloadSize": principal.max_payload,
                    "maxInflightMessages": MAX_INFLIGHT,
                    "rateLimits": {
                        "messages": rate,
                        "telemetryMessages": rate,
                        "telemetryDataPoints": "",
                    },
                },
            )
            return None
        self._send(principal, reply_topic, {"error": f"unknown method {request.get('method')!r}"})
        return self._dead(
            principal, message, "unknown_method", f"no client-side RPC {request.get('method')!r}"
        )

    async def _provision(self, principal: ProvisioningPrincipal, payload: bytes) -> None:
        """ThingsBoard device provisioning: answer with the new device's access token."""
        answer: dict[str, Any]
        try:
            request = orjson.loads(payload)
            if not isinstance(request, dict):
                raise ValueError("expected a JSON object")
            data = ProvisionIn(
                provision_key=request.get("provisionDeviceKey", ""),
                provision_secret=request.get("provisionDeviceSecret", ""),
                serial_number=request.get("deviceName", ""),
                name=request.get("deviceName") or None,
            )
        except (ValueError, orjson.JSONDecodeError) as exc:
            answer = {"status": "FAILURE", "errorMsg": f"bad provisioning request: {exc}"}
            self.dead_letters.record(
                organization_id=None,
                device_id=None,
                transport="mqtt",
                topic=topics.PROVISION_REQUEST,
                reason="bad_provision_request",
                detail=str(exc)[:500],
                payload=payload,
                source=principal.address,
            )
        else:
            try:
                async with self.database.session(write=True) as session:
                    _, token, _ = await provision(session, data=data)
                    await session.commit()
                answer = {
                    "status": "SUCCESS",
                    "credentialsType": "ACCESS_TOKEN",
                    "credentialsValue": token,
                }
            except DomainError as exc:
                answer = {"status": "FAILURE", "errorMsg": exc.message}
        self._send(principal, topics.PROVISION_RESPONSE, answer)

    # -- outbound ----------------------------------------------------------------------

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        """The desired configuration, for a device subscribing to its config topic."""
        if not isinstance(principal, DevicePrincipal):
            return []
        config_topic = topics.native(principal.key, Channel.CONFIG)
        if not topic_matches(config_topic, topic_filter):
            return []
        return [(config_topic, await self._config_payload(principal.device.id))]

    async def _config_payload(self, device_id: uuid.UUID) -> bytes:
        async with self.database.session() as session:
            shared = await attributes.device_values(session, device_id, AttributeScope.SHARED)
            version = await attributes.shared_version(session, device_id)
        return orjson.dumps({"shared": shared, "version": version})

    def _shared_changed(self, change: signals.SharedChange) -> None:
        if (
            change.scope != "shared"
            or self.broker is None
            or str(change.device_id) not in self.broker.connected_keys()
        ):
            return
        self._spawn(self._push_shared(change))

    async def _push_shared(self, change: signals.SharedChange) -> None:
        assert self.broker is not None
        key = str(change.device_id)
        config_topic = topics.native(key, Channel.CONFIG)
        self.broker.deliver(
            key, config_topic, await self._config_payload(change.device_id), retain=True
        )
        update: dict[str, Any] = dict(change.values)
        if change.deleted:
            update["deleted"] = list(change.deleted)
        self.broker.deliver(key, topics.TB_ATTRIBUTE_UPDATES, orjson.dumps(update))

    def _send(self, principal: Principal, topic: str, body: dict[str, Any]) -> None:
        if self.broker is not None:
            self.broker.deliver(principal.key, topic, orjson.dumps(body))
            metrics.MESSAGES_OUT.inc()

    # -- connections -------------------------------------------------------------------

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        """Count the connection; tell the listeners."""
        metrics.CONNECTED.inc()
        if isinstance(principal, DevicePrincipal):
            for listener in self.listeners:
                await _quietly(listener.device_connected(principal.device))

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        """Count the disconnection; tell the listeners."""
        metrics.CONNECTED.dec()
        if isinstance(principal, DevicePrincipal):
            for listener in self.listeners:
                await _quietly(listener.device_disconnected(principal.device, abnormal=abnormal))

    async def subscribed(self, principal: Principal, topic_filter: str) -> None:
        """Tell the listeners (the commands service sends what waits for this device)."""
        if isinstance(principal, DevicePrincipal):
            for listener in self.listeners:
                await _quietly(listener.device_subscribed(principal.device, topic_filter))

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
        live = [p for p in self.broker.principals() if isinstance(p, DevicePrincipal)]
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

    # -- helpers -----------------------------------------------------------------------

    def _dead(self, principal: Principal, message: Inbound, reason: str, detail: str) -> int:
        """Record a dead letter; returns the MQTT 5 reason code to answer with."""
        device = principal.device if isinstance(principal, DevicePrincipal) else None
        self.dead_letters.record(
            organization_id=device.organization_id if device else None,
            device_id=device.id if device else None,
            transport="mqtt",
            topic=message.topic[:512],
            reason=reason,
            detail=detail[:2000],
            payload=message.payload,
            # Stored at a bounded rate per sender: per device, or per address if anonymous.
            source=principal.address if isinstance(principal, ProvisioningPrincipal) else None,
        )
        return _REASON_CODES.get(reason, PAYLOAD_FORMAT_INVALID)

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(self._guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_lane(
        self, principal: DevicePrincipal, work: Coroutine[Any, Any, Any]
    ) -> asyncio.Task[Any]:
        async def in_order() -> Any:
            async with principal.lane:  # FIFO: a device's writes keep their order
                return await work

        return self._spawn(in_order())

    @staticmethod
    async def _guarded(work: Coroutine[Any, Any, Any]) -> Any:
        try:
            return await work
        except Exception:
            log.exception("mqtt_message_failed")
            raise


async def _quietly(work: Awaitable[None]) -> None:
    try:
        await work
    except Exception:
        log.exception("mqtt_listener_failed")


def _credentials(client: ClientInfo) -> tuple[str | None, str | None]:
    """(token, claimed device id) from a CONNECT's username and password."""
    if client.password:
        try:
            return client.password, str(uuid.UUID(client.username or ""))
        except ValueError:
            return client.password if not client.username else client.username, None
    return client.username, None


def _status_of(payload: bytes) -> str | None:
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            value = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return None
        text = str(value.get("status", "")) if isinstance(value, dict) else ""
    text = text.strip('"').lower()
    return text if text in ("online", "offline") else None


def _key_list(value: Any) -> set[str] | None:
    if isinstance(value, str) and value.strip():
        return {k.strip() for k in value.split(",") if k.strip()}
    if isinstance(value, list):
        return {str(k) for k in value}
    return None
