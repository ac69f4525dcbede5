"""Device messages into the platform: one path for limits, checks, dead letters and routing.

- Payload limit, rate limit (one bucket per device), topic and ACL checks, then the decoded
  message goes to its domain service: telemetry to the ingest pipeline (the answer waits for
  the commit); client attributes, events, status, command results and DEX files are written
  before the answer too, one at a time per device so they keep their order.
- Anything unusable becomes a dead letter (reason, topic, truncated copy) and is answered
  with a reason code: one bad message never drops the connection.
- The organization's plan (fleetcore.plans.quota): messages per second and readings per day;
  over either, a dead letter quota_exceeded answered with 0x97 (quota exceeded).
- Provisioning ("provision", no password) costs a token of its client address's bucket per
  request.
- Shared attribute changes are pushed to connected devices through the outbox.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import structlog

from fleetcore.attributes import service as attributes
from fleetcore.attributes import signals
from fleetcore.buckets import TokenBucket
from fleetcore.db import Database
from fleetcore.deadletters.sink import DeadLetterSink, Transport
from fleetcore.device_messages import acl, metrics, replies
from fleetcore.device_messages.ports import (
    CommandResults,
    DeviceListener,
    DeviceOutbox,
    DexUploads,
    OtaChunks,
    ResultRecorder,
    Verdict,
)
from fleetcore.device_messages.sessions import DeviceSession, Provisioner
from fleetcore.devices import auth_cache
from fleetcore.devices.models import Device
from fleetcore.errors import DomainError
from fleetcore.events.codec import parse_events
from fleetcore.events.ports import EventHook
from fleetcore.events.service import record_events
from fleetcore.plans.quota import IngestQuota
from fleetcore.telemetry import metrics as telemetry_metrics
from fleetcore.telemetry.ingest import decode_and_check
from fleetcore.telemetry.pipeline import IngestPipeline, Overloaded
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore_protocol import messages as m
from fleetcore_protocol.topics import TopicError

log = structlog.get_logger(__name__)

_ACCEPTED_MQTT = telemetry_metrics.ACCEPTED.labels("mqtt")
PAYLOAD_FORMAT_INVALID = 0x99
# A refused OTA chunk's dead-letter reason -> the status ThingsBoard's transport publishes.
_OTA_REFUSALS = {"chunk_too_large": "PAYLOAD_TOO_LARGE", "ota_not_assigned": "NOT_FOUND"}
# The MQTT 5 PUBACK reason code for each dead-letter reason (others: payload format invalid).
_REASON_CODES = {
    "not_allowed": 0x87,  # not authorized
    "rate_limited": 0x97,  # quota exceeded
    "quota_exceeded": 0x97,  # over the organization's plan
    "unknown_topic": 0x90,  # topic name invalid
    "oversize": 0x83,  # implementation specific: over the profile's payload limit
    "overloaded": 0x80,
    "unknown_method": 0x00,  # answered on the RPC response topic
}


class DeviceMessages:
    """The inbound handler: a decoded message from a known sender to the domain services."""

    def __init__(
        self, database: Database, pipeline: IngestPipeline, dead_letters: DeadLetterSink
    ) -> None:
        self.database = database
        self.pipeline = pipeline
        self.dead_letters = dead_letters
        self.outbox: DeviceOutbox | None = None
        self.listeners: list[DeviceListener] = []
        self.command_results: CommandResults | None = None
        self.dex_uploads: DexUploads | None = None
        self.ota_chunks: OtaChunks | None = None  # ThingsBoard's v2/fw and v2/sw chunks
        # Modules' share of event ingest (media attachments, plate reads): events/ports.py.
        self.event_hooks: list[EventHook] = []
        self.http_results: ResultRecorder | None = None  # HTTP's command results
        # The organization's plan limits (None: no plans here, nothing asked).
        self.quota: IngestQuota | None = None
        # Called as each device message arrives (presence: online, last seen).
        self.on_traffic: Callable[[auth_cache.IngestDevice], None] | None = None
        # A message other than telemetry was taken (usage: messages by transport).
        self.on_message: Callable[[auth_cache.IngestDevice, str], None] | None = None
        # Called with a device's own "online"/"offline" status message (its birth and last
        # will): presence where no broker hook reports connections (an external broker).
        self.on_status: Callable[[auth_cache.IngestDevice, str], None] | None = None
        self._buckets: dict[str, TokenBucket] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stop_listening: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def attach(self, outbox: DeviceOutbox) -> None:
        """Send through this outbox; push desired-state changes through it."""
        self.outbox = outbox
        self._stop_listening = signals.listen(self._shared_changed)

    async def detach(self) -> None:
        """Stop listening and wait for work in flight."""
        if self._stop_listening is not None:
            self._stop_listening()
            self._stop_listening = None
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=10)

    def session(self, device: auth_cache.IngestDevice, token_hash: str) -> DeviceSession:
        """A sender for an authenticated device, with its profile's limits."""
        rules = device.profile or auth_cache.ProfileRules.of(None)
        limits = (rules.mqtt_rate_per_s, rules.mqtt_burst)
        # One bucket per device, shared by its connections and kept across reconnects.
        bucket = self._buckets.get(str(device.id))
        if bucket is None or (bucket.rate, bucket.burst) != limits:
            bucket = self._buckets[str(device.id)] = TokenBucket(*limits)
        return DeviceSession(
            device=device,
            token_hash=token_hash,
            max_payload=rules.max_payload_bytes,
            bucket=bucket,
        )

    # -- inbound -----------------------------------------------------------------------

    def note_traffic(self, device: auth_cache.IngestDevice) -> None:
        """A device sent something, as it arrives (presence: online, last seen)."""
        if self.on_traffic is not None:
            self.on_traffic(device)

    def receive(
        self,
        sender: DeviceSession,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        will: bool = False,
        transport: Transport = "mqtt",
    ) -> Verdict:
        """Take one message, synchronously and in order; the awaitable completes once durable."""
        dead = _Dead(self, sender, topic, payload, transport)
        if not will:
            self.note_traffic(sender.device)
        if len(payload) > sender.max_payload:
            return dead(
                "oversize", f"{len(payload)} bytes; the profile allows {sender.max_payload}"
            )
        if not will and not sender.bucket.take():
            return dead("rate_limited", "over the profile's message rate")
        try:
            parsed = acl.upstream_topic(sender.key, topic)
        except TopicError as exc:
            return dead("unknown_topic", str(exc))
        except acl.NotAllowed as exc:
            metrics.ACL_DENIED.labels("publish").inc()
            return dead("not_allowed", str(exc))
        message = m.decode_payload(parsed, payload, loads=orjson.loads)
        if isinstance(message, m.Undecodable):
            dead(message.reason, message.detail)
            return PAYLOAD_FORMAT_INVALID
        if self.on_message is not None and not isinstance(message, m.Telemetry):
            self.on_message(sender.device, transport)
        quota = self.quota
        if quota is not None and quota.rated(sender.device.organization_id):
            return self._spawn(self._rated(quota, sender, message, dead, qos))
        return self._route(sender, message, dead, qos)

    async def _rated(
        self,
        quota: IngestQuota,
        sender: DeviceSession,
        message: m.DeviceMessage,
        dead: _Dead,
        qos: int,
    ) -> object:
        """The plan's messages-per-second window first; then routed as any other message.
        The quota lane keeps a device's messages in order while the window is asked."""
        async with sender.quota_lane:
            refused = await quota.take_message(sender.device.organization_id)
            verdict = (
                dead("quota_exceeded", refused.message)
                if refused is not None
                else self._route(sender, message, dead, qos)
            )
        if verdict is None or isinstance(verdict, int):
            return verdict
        return await verdict

    def _route(
        self, sender: DeviceSession, message: m.DeviceMessage, dead: _Dead, qos: int
    ) -> Verdict:
        match message:
            case m.Telemetry():
                return self._telemetry(sender, message, dead, qos)
            case m.ClientAttributes():
                return self._in_lane(sender, self._client_attributes(sender, message, dead))
            case m.CommandResult() if self.command_results is not None:
                return self._in_lane(sender, self.command_results(sender.device, *_result(message)))
            case m.Event() | m.Status() | m.CommandResult():
                return self._event(sender, message, dead)
            case m.AttributeRequest():
                # In the device's lane, behind its earlier attribute writes: a device that
                # publishes attributes and then asks for them gets what it published, also
                # where a broker acknowledged the publish before it was written (external).
                return self._in_lane(sender, self._attribute_request(sender, message))
            case m.RpcRequest():
                reply, known = replies.rpc_reply(sender, message)
                self.send(sender.key, reply)
                if known:
                    return None
                return dead("unknown_method", f"no client-side RPC {message.method!r}")
            case m.OtaChunkRequest():
                if self.ota_chunks is None:
                    return dead("unknown_topic", "no OTA packages here")
                return self._spawn(self._ota_chunk(sender, message, dead))
            case m.DexUpload():
                if self.dex_uploads is None:
                    return dead("unknown_topic", "no DEX audits here")
                return self._in_lane(sender, self._dex(sender, message, dead))
        raise AssertionError(message)  # pragma: no cover - decode_payload gives no other

    def _telemetry(
        self, sender: DeviceSession, message: m.Telemetry, dead: _Dead, qos: int
    ) -> Verdict:
        # Metered at the commit (messages, readings stored): fleetcore.usage via the pipeline.
        device = sender.device
        try:
            checked = decode_and_check(
                message.payload, device.profile, now_ms=int(time.time() * 1000)
            )
        except DomainError as exc:
            return dead(exc.code.lower(), exc.message)
        if checked.problems:
            detail = "; ".join(f"{p.key or '?'}: {p.code} {p.message}" for p in checked.problems)
            dead("rejected_readings", detail)
        if not checked.readings:
            return PAYLOAD_FORMAT_INVALID
        if self.quota is not None and (
            refused := self.quota.check_readings(device.organization_id, len(checked.readings))
        ):
            return dead("quota_exceeded", refused.message)
        _ACCEPTED_MQTT.inc(len(checked.readings))
        item = DeviceReadings(device.id, device.organization_id, checked.readings, dead.transport)
        try:
            return self.pipeline.enqueue(item)  # resolves after the commit
        except Overloaded:
            if qos == 0:
                return dead("overloaded", "ingest was full (QoS 0)")
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

    async def _client_attributes(
        self, sender: DeviceSession, message: m.ClientAttributes, dead: _Dead
    ) -> None:
        async with self.database.session(write=True) as session:
            device = await session.get(Device, sender.device.id)
            if device is None:
                return
            try:
                await attributes.merge_client_attributes(session, device, values=message.values)
            except DomainError as exc:
                await session.rollback()
                dead(exc.code.lower(), exc.message)

    def _event(
        self, sender: DeviceSession, message: m.Event | m.Status | m.CommandResult, dead: _Dead
    ) -> Verdict:
        match message:
            case m.Event():
                payload = message.payload
            case m.Status():
                if self.on_status is not None:
                    self.on_status(sender.device, message.status)
                payload = orjson.dumps({"type": "status", "data": {"status": message.status}})
            case m.CommandResult():  # no commands service: kept as an event
                data = {"command_id": message.command_id, "result": message.body}
                payload = orjson.dumps({"type": "command_result", "data": data})
        try:
            parsed = parse_events(payload, now_ms=int(time.time() * 1000))
        except DomainError as exc:
            return dead(exc.code.lower(), exc.message)
        return self._in_lane(sender, self._store_events(sender, list(parsed), dead))

    async def _store_events(
        self, sender: DeviceSession, parsed: list[Any], dead: _Dead
    ) -> int | None:
        """Stored (the answer waits for the commit), or a dead letter when a hook refused."""
        async with self.database.session() as session:
            try:
                await record_events(session, sender.device, parsed, self.event_hooks)
            except DomainError as exc:  # e.g. an attachment that is not this device's
                return dead(exc.code.lower(), exc.message)
        return None

    async def _dex(self, sender: DeviceSession, message: m.DexUpload, dead: _Dead) -> int | None:
        """Stored (the answer waits for the commit), or a dead letter when it is no DEX file."""
        assert self.dex_uploads is not None
        refused = await self.dex_uploads(sender.device, message.payload)
        if refused is None:
            return None
        return dead(*refused)

    async def _ota_chunk(
        self, sender: DeviceSession, request: m.OtaChunkRequest, dead: _Dead
    ) -> None:
        """Answered on the chunk's response topic; or refused with ThingsBoard's error message
        (v2/fw/error), so the device need not wait for its own timeout, and a dead letter."""
        assert self.ota_chunks is not None
        kind = "firmware" if request.package == "fw" else "software"
        answer = await self.ota_chunks(
            sender.device, kind, request.request_id, request.chunk, request.size
        )
        if isinstance(answer, tuple):
            self.send(sender.key, m.OtaChunkError(_OTA_REFUSALS.get(answer[0], "FAILURE")))
            dead(*answer)
            return
        self.send(
            sender.key, m.OtaChunk(request.package, request.request_id, request.chunk, answer)
        )

    async def _attribute_request(self, sender: DeviceSession, request: m.AttributeRequest) -> None:
        self.send(
            sender.key, await replies.attribute_reply(self.database, sender.device.id, request)
        )

    # -- provisioning ------------------------------------------------------------------

    def receive_provisioning(self, sender: Provisioner, topic: str, payload: bytes) -> Verdict:
        """A provisioning client's request: answered with a token, or why not."""
        dead = _Dead(self, sender, topic, payload, "mqtt")
        if not acl.provisioner_may("publish", topic):
            return dead("not_allowed", "a provisioning connection may only ask")
        if not sender.rate.take(sender.address):
            self.send(sender.key, m.ProvisionReply(error="too many provisioning requests"))
            return dead("rate_limited", "provisioning too often")
        return self._spawn(self._provision(sender, payload, dead))

    async def _provision(self, sender: Provisioner, payload: bytes, dead: _Dead) -> None:
        request = m.decode_provision(payload, loads=orjson.loads)
        try:
            if isinstance(request, m.Undecodable):
                raise ValueError(request.detail)
            data = replies.provision_in(request)
        except ValueError as exc:
            self.send(sender.key, m.ProvisionReply(error=f"bad provisioning request: {exc}"))
            dead("bad_provision_request", str(exc)[:500])
            return
        self.send(sender.key, await replies.provision_reply(self.database, data))

    # -- connections -------------------------------------------------------------------

    async def connected(self, device: auth_cache.IngestDevice) -> None:
        """A device connected: tell the listeners."""
        for listener in self.listeners:
            await _quietly(listener.device_connected(device))

    async def disconnected(self, device: auth_cache.IngestDevice, *, abnormal: bool) -> None:
        """A device's connection ended: tell the listeners."""
        for listener in self.listeners:
            await _quietly(listener.device_disconnected(device, abnormal=abnormal))

    async def subscribed(self, device: auth_cache.IngestDevice, topic_filter: str) -> None:
        """Tell the listeners (the commands service sends what waits for this device)."""
        for listener in self.listeners:
            await _quietly(listener.device_subscribed(device, topic_filter))

    # -- outbound ----------------------------------------------------------------------

    async def desired_config(self, device_id: uuid.UUID) -> m.DesiredConfig:
        """The device's desired configuration (for a new subscription to its config topic)."""
        return await replies.desired_config(self.database, device_id)

    def send(self, recipient: str, message: m.OutboundMessage) -> m.Family | None:
        """Through the outbox, if there is one."""
        return self.outbox.send(recipient, message) if self.outbox is not None else None

    def _shared_changed(self, change: signals.SharedChange) -> None:
        if (
            change.scope != "shared"
            or self.outbox is None
            or str(change.device_id) not in self.outbox.online()
        ):
            return
        self._spawn(self._push_shared(change))

    async def _push_shared(self, change: signals.SharedChange) -> None:
        key = str(change.device_id)
        self.send(key, await self.desired_config(change.device_id))
        self.send(key, m.AttributeUpdate(dict(change.values), tuple(change.deleted)))

    # -- helpers -----------------------------------------------------------------------

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(_guarded(work))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _in_lane(self, sender: DeviceSession, work: Awaitable[Any]) -> asyncio.Task[Any]:
        async def in_order() -> Any:
            async with sender.lane:  # FIFO: a device's writes keep their order
                return await work

        return self._spawn(in_order())


class _Dead:
    """Records a dead letter for one message; returns the reason code to answer with."""

    __slots__ = ("layer", "payload", "sender", "topic", "transport")

    def __init__(
        self,
        layer: DeviceMessages,
        sender: DeviceSession | Provisioner,
        topic: str,
        payload: bytes,
        transport: Transport,
    ) -> None:
        self.layer, self.sender, self.topic = layer, sender, topic
        self.payload, self.transport = payload, transport

    def __call__(self, reason: str, detail: str) -> int:
        device = self.sender.device if isinstance(self.sender, DeviceSession) else None
        self.layer.dead_letters.record(
            organization_id=device.organization_id if device else None,
            device_id=device.id if device else None,
            transport=self.transport,
            topic=self.topic[:512],
            reason=reason,
            detail=detail[:2000],
            payload=self.payload,
            # Stored at a bounded rate per sender: per device, or per address if anonymous.
            source=self.sender.address if isinstance(self.sender, Provisioner) else None,
        )
        return _REASON_CODES.get(reason, PAYLOAD_FORMAT_INVALID)


def _result(message: m.CommandResult) -> tuple[str, dict[str, Any], bool]:
    return message.command_id, message.body, message.thingsboard


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
