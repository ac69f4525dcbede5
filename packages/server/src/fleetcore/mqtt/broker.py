"""The embedded MQTT 3.1.1 broker: amqtt 0.12.1 with our connection lifecycle and publish path.

amqtt gives us the packet codecs, listeners (TCP, WebSocket, TLS), sessions, the outgoing QoS
flows and subscription matching. We replace the parts where 0.12.1 has defects (each has a
test in tests/test_mqtt_broker.py that fails on the unmodified broker):

1. Inbound messages are handed to the application synchronously, in order, as the reader
   reads them, and acknowledged only when the application says they are durable; nothing
   sits in a per-session queue that a disconnect clears.
2. A CONNECT is authenticated before any existing session is looked at, so a wrong password
   never disturbs the genuine client.
3. Retained messages go to a client only for its own new subscription, and only what the
   application returns for that client.
4. Outgoing QoS 1 messages stay in the session until acknowledged and are resent when a
   persistent session reconnects; a take-over closes the old connection and waits for it.
5. ACL and the application hook run before the PUBACK; the hook is synchronous and bounded
   (admission is the pipeline's), and acknowledgements are ordered per connection.
6. Sessions are keyed by the authenticated principal and the client id together, so one
   device's credentials can never take over another device's client id.
7. What a client may cost is bounded (fleetcore.mqtt.limits): connections in all, still in
   their CONNECT phase and provisional; the CONNECT's deadline and size (checked from the
   fixed header, before the body is read), every later packet's size, the keep-alive.

Messages published by devices are never fanned out to other clients: the application is
the only consumer, and it sends to a device with `deliver`, which reaches that device's
own sessions alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter, StreamWriterAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, ListenerType
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import IDENTIFIER_REJECTED, UNACCEPTABLE_PROTOCOL_VERSION, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_0, QOS_1
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import CONNECT, MQTTFixedHeader
from amqtt.session import OutgoingApplicationMessage, Session
from amqtt.utils import gen_client_id

from fleetcore.mqtt import metrics, mqtt5
from fleetcore.mqtt.handler import (
    ADMINISTRATIVE_ACTION,
    SERVER_SHUTTING_DOWN,
    SESSION_TAKEN_OVER,
    FleetProtocolHandler,
)
from fleetcore.mqtt.handler5 import Mqtt5ProtocolHandler
from fleetcore.mqtt.hooks import (
    BAD_USERNAME_PASSWORD,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    BrokerHooks,
    ClientInfo,
    Inbound,
    Principal,
    Provisional,
    Refused,
)
from fleetcore.mqtt.limits import Admission, ConnectionGate, MqttLimits
from fleetcore_protocol.topics import topic_matches

log = logging.getLogger(__name__)

MAX_OFFLINE_MESSAGES = 1_000
_MQTT_311 = 4

__all__ = [
    "BAD_USERNAME_PASSWORD",
    "IDENTIFIER_REJECTED",
    "NOT_AUTHORIZED",
    "SERVER_UNAVAILABLE",
    "BrokerHooks",
    "ClientInfo",
    "FleetBroker",
    "Inbound",
    "MqttLimits",
    "Principal",
    "Refused",
    "topic_matches",
]


@dataclass(frozen=True, slots=True)
class _Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class _Connect:
    """A CONNECT of either protocol version, as the broker needs it."""

    client: ClientInfo
    keep_alive: int
    will: _Will | None
    random_id: bool  # the client sent an empty id
    session_expiry: int | None = None  # MQTT 5; None for 3.1.1 (the clean flag decides)
    max_packet_size: int | None = None  # MQTT 5: the largest packet the client accepts


@dataclass(eq=False)
class _Connection:
    key: str
    principal: Principal
    client: ClientInfo
    handler: FleetProtocolHandler
    session: Session
    taken_over: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    expires_at: float | None = None  # loop time; a provisional session ends then


class _TooLarge(Exception):
    """A CONNECT declaring more bytes than the limit (its body is never read)."""


class FleetBroker(Broker):
    """amqtt's broker with the application deciding who connects, what they may do and
    where their messages go (see the module docstring for what is replaced and why)."""

    def __init__(
        self, config: dict[str, Any], hooks: BrokerHooks, limits: MqttLimits | None = None
    ) -> None:
        super().__init__({**config, "plugins": {}})
        self.hooks = hooks
        self.gate = ConnectionGate(limits or MqttLimits())
        self._tls: dict[str, ssl.SSLContext] = {}  # listener name -> context, started by us
        self._connections: dict[str, _Connection] = {}
        self._keys_of: defaultdict[str, set[str]] = defaultdict(set)
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._serving: set[asyncio.Task[Any]] = set()
        self._outbound: set[asyncio.Task[Any]] = set()

    # -- who is connected -------------------------------------------------------------

    def connected_keys(self) -> set[str]:
        """Principal keys with at least one live connection."""
        return {c.principal.key for c in self._connections.values()}

    def principals(self) -> list[Principal]:
        """The principal of every live connection."""
        return [c.principal for c in self._connections.values()]

    # -- connection lifecycle ---------------------------------------------------------

    async def _create_server_instance(
        self,
        listener_name: str,
        listener_type: ListenerType,
        address: str | None,
        port: int,
        ssl_context: ssl.SSLContext | None,
    ) -> Any:
        if listener_type != ListenerType.TCP or ssl_context is None:
            return await super()._create_server_instance(
                listener_name, listener_type, address, port, ssl_context
            )
        # TLS is started by _serve after admission, so a connection is counted, and its
        # CONNECT deadline runs, from the TCP accept rather than from the end of a handshake
        # the client may never finish.
        self._tls[listener_name] = ssl_context
        return await asyncio.start_server(
            partial(self.stream_connected, listener_name=listener_name),
            address,
            port,
            reuse_address=True,
        )

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        server = self._servers.get(listener_name)
        peer = writer.get_peer_info()
        admission = (
            None if server is None else self.gate.admit(str(peer[0]) if peer else "", listener_name)
        )
        if server is None or admission is None:
            await _close(writer)  # over a limit: closed before anything is read
            return
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        await server.acquire_connection()
        try:
            await self._serve(reader, writer, admission, self._tls.get(listener_name))
        except (AMQTTError, MQTTError, NoDataError, ConnectionError, TimeoutError) as exc:
            log.info("mqtt_connection_ended", extra={"reason": repr(exc)})
        except asyncio.IncompleteReadError:
            log.info("mqtt_connection_ended", extra={"reason": "incomplete packet"})
        finally:
            await _close(writer)
            self.gate.release(admission)
            server.release_connection()
            if task is not None:
                self._serving.discard(task)

    async def _serve(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        admission: Admission,
        tls: ssl.SSLContext | None,
    ) -> None:
        peer = writer.get_peer_info()
        remote = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        limits = self.gate.limits
        try:
            async with asyncio.timeout(limits.connect_timeout_s):
                if tls is not None:
                    await _start_tls(writer, tls)
                first = await _read_connect(reader, remote, limits)
        except TimeoutError:
            metrics.CONNECTIONS_REFUSED.labels("connect_timeout").inc()
            log.debug("mqtt_connect_timeout", extra={"remote": remote})
            return
        except _TooLarge:
            metrics.CONNECTIONS_REFUSED.labels("connect_too_large").inc()
            log.info("mqtt_connect_too_large", extra={"remote": remote})
            return
        if isinstance(first, tuple):  # refused before authentication: (version, code)
            await _refuse(writer, *first)
            return
        if first is None:
            log.info("mqtt_not_a_connect", extra={"remote": remote})
            await writer.close()
            return
        client = first.client
        try:
            principal = await self.hooks.authenticate(client)
        except Refused as exc:
            log.info("mqtt_refused", extra={"remote": remote, "reason": exc.reason})
            await _refuse(writer, client.protocol, exc.code)
            return
        provisional = isinstance(principal, Provisional)
        if not self.gate.establish(admission, provisional=provisional):
            await _refuse(writer, client.protocol, mqtt5.SERVER_BUSY)
            return
        keep_alive = limits.keep_alive(first.keep_alive)
        client_id = client.client_id or gen_client_id()
        key = f"{principal.key}|{client_id}"
        async with self._locks[key]:
            old = self._connections.get(key)
            if old is not None:
                await self._take_over(old)
            existing = self._sessions.get(key)
            if existing is not None and (client.clean_session or existing[0].clean_session):
                await self._forget(key)
                existing = None
            present = existing is not None
            session = existing[0] if existing is not None else Session()
            session.client_id = key
            # Whether the session ends with the connection: 3.1.1's clean flag, or an MQTT 5
            # session expiry interval of 0.
            expiry = first.session_expiry
            session.clean_session = client.clean_session if expiry is None else expiry == 0
            will = first.will
            session.will_flag = will is not None
            session.will_retain = will.retain if will else False
            session.will_qos = will.qos if will else None
            session.will_topic = will.topic if will else None
            session.will_message = will.payload if will else None
            session.keep_alive = keep_alive  # the reader closes after 1.5 x this idle
            session.username = principal.key  # the token never stays in memory here
            session.password = None
            session.remote_address = remote
            handler_class = Mqtt5ProtocolHandler if client.protocol == 5 else FleetProtocolHandler
            handler = handler_class(self.plugins_manager, loop=self._loop)
            handler.bind(self, principal)
            if isinstance(handler, Mqtt5ProtocolHandler):
                handler.max_packet_size = first.max_packet_size
            handler.attach(session, reader, writer)
            self._sessions[key] = (session, handler)
            self._keys_of[principal.key].add(key)
            connection = _Connection(key, principal, client, handler, session)
            if isinstance(principal, Provisional):
                connection.expires_at = self._loop.time() + principal.lifetime_s
            self._connections[key] = connection
            if session.transitions.is_connected():  # the old connection did not end in time
                session.transitions.disconnect()
            session.transitions.connect()
            try:
                await handler.send_connack(
                    present,
                    client_id if first.random_id else None,
                    keep_alive=keep_alive if keep_alive != first.keep_alive else None,
                )
            except BaseException:
                # A client gone before its CONNACK: no hook has heard of the connection, so
                # undo it here, or it stays "connected" (and in memory) for ever.
                await self._abandon(connection)
                raise
        try:
            await self.hooks.connected(principal, client)
            await handler.start()  # also resends unacknowledged outgoing messages
            await self._send_offline(session, handler)
            if present:  # a resumed session keeps its subscriptions: as good as new ones
                for topic_filter, subscribers in list(self._subscriptions.items()):
                    if any(subscriber is session for subscriber, _ in subscribers):
                        await self._subscribed(principal, topic_filter)
            await self._run(connection)
        finally:
            connection.finished.set()

    async def _abandon(self, connection: _Connection) -> None:
        if self._connections.get(connection.key) is connection:
            del self._connections[connection.key]
        if connection.session.transitions.is_connected():
            connection.session.transitions.disconnect()
        if connection.session.clean_session:
            await self._forget(connection.key)
        connection.finished.set()

    async def _take_over(self, old: _Connection) -> None:
        """Close the connection a new CONNECT replaces and wait until it is gone."""
        old.taken_over = True
        await old.handler.close(SESSION_TAKEN_OVER)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.finished.wait(), 5)

    async def _run(self, connection: _Connection) -> None:
        handler = connection.handler
        disconnect = asyncio.ensure_future(handler.wait_disconnect())
        subscribe = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        try:
            while True:
                timeout = None
                if connection.expires_at is not None:
                    timeout = max(0.0, connection.expires_at - self._loop.time())
                done, _ = await asyncio.wait(
                    [disconnect, subscribe, unsubscribe],
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done:  # a provisional session's time is up
                    connection.expires_at = None
                    metrics.CLOSED.labels("lifetime").inc()
                    await handler.close(mqtt5.MAXIMUM_CONNECT_TIME)
                    continue
                if subscribe in done:
                    await self._handle_subscription(connection.session, handler, subscribe)
                    subscribe = asyncio.ensure_future(handler.get_next_pending_subscription())
                if unsubscribe in done:
                    await self._handle_unsubscription(connection.session, handler, unsubscribe)
                    unsubscribe = asyncio.ensure_future(handler.get_next_pending_unsubscription())
                if disconnect in done:
                    break
        finally:
            for waiter in (subscribe, unsubscribe, disconnect):
                waiter.cancel()
            result = None if disconnect.cancelled() else disconnect.result()
            await self._end(connection, abnormal=not isinstance(result, DisconnectPacket))

    async def _end(self, connection: _Connection, *, abnormal: bool) -> None:
        await connection.handler.stop()
        if self._connections.get(connection.key) is connection:
            del self._connections[connection.key]
        if connection.taken_over:
            return  # the new connection owns the session now
        session = connection.session
        if abnormal and session.will_flag and session.will_topic:
            self.hooks.accept(
                connection.principal,
                Inbound(
                    session.will_topic,
                    bytes(session.will_message or b""),
                    session.will_qos or QOS_0,
                    bool(session.will_retain),
                    will=True,
                ),
            )
        if session.transitions.is_connected():
            session.transitions.disconnect()
        if session.clean_session:
            await self._forget(connection.key)
        try:
            await self.hooks.disconnected(connection.principal, abnormal=abnormal)
        except Exception:
            log.exception("mqtt_disconnect_hook_failed")

    async def _forget(self, key: str) -> None:
        """Drop a session: its subscriptions, queued and in-flight messages."""
        entry = self._sessions.pop(key, None)
        principal_key = key.rsplit("|", 1)[0]
        keys = self._keys_of.get(principal_key)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys_of[principal_key]
        if entry is not None:
            await self._del_all_subscriptions(entry[0])
            entry[0].clear_queues()
            entry[0].inflight_out.clear()

    async def _cleanup_session(self, client_id: str) -> None:
        # amqtt's session monitor and shutdown call this; keep our index in step.
        connection = self._connections.get(client_id)
        if connection is not None:
            await connection.handler.stop()
        await self._forget(client_id)

    async def drop(self, principal_key: str) -> int:
        """Disconnect every connection of a principal and forget its sessions."""
        keys = list(self._keys_of.get(principal_key, ()))
        for key in keys:
            connection = self._connections.get(key)
            if connection is not None:
                await connection.handler.close(ADMINISTRATIVE_ACTION)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(connection.finished.wait(), 5)
            await self._forget(key)
        return len(keys)

    async def shutdown(self) -> None:
        """Stop listening, close every connection and wait for them to end."""
        for server in self._servers.values():
            if server.instance is not None:
                server.instance.close()
        for connection in list(self._connections.values()):
            await connection.handler.close(SERVER_SHUTTING_DOWN)
        if self._serving:
            await asyncio.wait(self._serving, timeout=5)
        for task in self._outbound:
            task.cancel()
        await super().shutdown()

    # -- subscriptions and retained messages --------------------------------------------

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        if action != Action.SUBSCRIBE:
            return True
        connection = self._connections.get(session.client_id or "")
        return connection is not None and self.hooks.may_subscribe(connection.principal, topic)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        # Only what the application returns for this client's own new subscription.
        connection = self._connections.get(session.client_id or "")
        if connection is None:
            return
        topic_filter, qos = subscription
        for topic, payload in await self.hooks.retained(connection.principal, topic_filter):
            if topic_matches(topic, topic_filter):
                await self._send(connection.handler, topic, payload, min(qos, QOS_1), retain=True)
        await self._subscribed(connection.principal, topic_filter)

    async def _subscribed(self, principal: Principal, topic_filter: str) -> None:
        try:
            await self.hooks.subscribed(principal, topic_filter)
        except Exception:
            log.exception("mqtt_subscribed_hook_failed")

    # -- sending to devices -------------------------------------------------------------

    def deliver(
        self,
        principal_key: str,
        topic: str,
        payload: bytes,
        qos: int = QOS_1,
        *,
        retain: bool = False,
    ) -> int:
        """Send to this principal's sessions subscribed to `topic`, and to no one else.

        Connected sessions get it now; a disconnected persistent session keeps QoS 1
        messages for its reconnect. Returns how many sessions it was sent or queued for.
        """
        count = 0
        for key in list(self._keys_of.get(principal_key, ())):
            entry = self._sessions.get(key)
            if entry is None:
                continue
            session = entry[0]
            granted = self._granted(session, topic)
            if granted is None:
                continue
            effective = min(qos, granted)
            connection = self._connections.get(key)
            if connection is not None:
                task = asyncio.create_task(
                    self._send(connection.handler, topic, payload, effective, retain=retain)
                )
                self._outbound.add(task)
                task.add_done_callback(self._outbound.discard)
                count += 1
            elif effective >= QOS_1 and not session.clean_session:
                queue = session.retained_messages
                if queue.qsize() >= MAX_OFFLINE_MESSAGES:
                    queue.get_nowait()
                    log.warning("mqtt_offline_queue_full", extra={"session": key})
                message = OutgoingApplicationMessage(None, topic, effective, payload, retain)
                queue.put_nowait(message)
                count += 1
        return count

    def _granted(self, session: Session, topic: str) -> int | None:
        granted: int | None = None
        for topic_filter, subscribers in self._subscriptions.items():
            if not topic_matches(topic, topic_filter):
                continue
            for subscriber, qos in subscribers:
                if subscriber is session:
                    granted = qos if granted is None else max(granted, qos)
        return granted

    async def _send(
        self, handler: FleetProtocolHandler, topic: str, payload: bytes, qos: int, *, retain: bool
    ) -> None:
        try:
            await handler.mqtt_publish(topic, payload, qos, retain=retain)
        except (TimeoutError, AMQTTError, ConnectionError, asyncio.CancelledError):
            # Still in the session's in-flight set if unacknowledged: resent on reconnect.
            log.debug("mqtt_send_incomplete", exc_info=True)

    async def _resend(
        self, handler: FleetProtocolHandler, message: OutgoingApplicationMessage
    ) -> None:
        try:
            await handler._handle_qos1_message_flow(message)
        except (TimeoutError, AMQTTError, ConnectionError, asyncio.CancelledError):
            log.debug("mqtt_resend_incomplete", exc_info=True)

    async def add_subscription(self, subscription: tuple[str, int], session: Session) -> int:
        """Subscribe with QoS at most 1 (the platform never sends QoS 2)."""
        topic_filter, qos = subscription
        return await super().add_subscription((topic_filter, min(qos, QOS_1)), session)

    async def _send_offline(self, session: Session, handler: FleetProtocolHandler) -> None:
        while not session.retained_messages.empty():
            message = session.retained_messages.get_nowait()
            task = asyncio.create_task(
                self._send(
                    handler,
                    message.topic,
                    bytes(message.data),
                    message.qos or QOS_0,
                    retain=message.retain,
                )
            )
            self._outbound.add(task)
            task.add_done_callback(self._outbound.discard)


async def _read_connect(
    reader: ReaderAdapter, remote: str, limits: MqttLimits
) -> _Connect | tuple[int, int] | None:
    """The first packet if it is a CONNECT we can serve; (version, refusal code) if it is a
    CONNECT we must refuse; None if it is not a CONNECT at all ([MQTT-3.1.0-1]).

    Raises _TooLarge, reading no further, when the fixed header declares too many bytes.
    """
    header = await MQTTFixedHeader.from_stream(reader)
    if header is None or header.packet_type != CONNECT:
        return None
    if limits.connect_too_large(header.remaining_length):
        raise _TooLarge
    body = await reader.read(header.remaining_length)
    try:
        level = mqtt5.protocol_level(body)
    except mqtt5.ProtocolError:
        # MQTT 3.1 ("MQIsdp") gets its answer; anything else is not MQTT at all.
        return (4, UNACCEPTABLE_PROTOCOL_VERSION) if body[2:8] == b"MQIsdp" else None
    if level == mqtt5.PROTOCOL_LEVEL:
        try:
            return _from_mqtt5(mqtt5.parse_connect(body), remote)
        except mqtt5.ProtocolError as exc:
            return (5, exc.reason)
    if level != _MQTT_311:
        return (4, UNACCEPTABLE_PROTOCOL_VERSION)
    if not _strings_are_utf8(body):
        return None  # malformed: close without a CONNACK ([MQTT-1.5.3-1])
    connect = await ConnectPacket.from_stream(BufferReader(body), fixed_header=header)
    refusal = _check_connect(connect)
    if refusal is not None:
        return (4, refusal)
    random_id = connect.payload is not None and connect.payload.client_id_is_random
    will = (
        _Will(
            connect.will_topic,
            bytes(connect.will_message or b""),
            connect.will_qos or QOS_0,
            bool(connect.will_retain_flag),
        )
        if connect.will_flag and connect.will_topic
        else None
    )
    client = ClientInfo(
        client_id="" if random_id else (connect.client_id or ""),
        username=connect.username,
        password=connect.password,
        clean_session=bool(connect.clean_session_flag),
        remote=remote,
    )
    return _Connect(client, max(connect.keep_alive, 0), will, random_id)


def _from_mqtt5(connect: mqtt5.Connect, remote: str) -> _Connect:
    will = connect.will
    client = ClientInfo(
        client_id=connect.client_id,
        username=connect.username,
        password=connect.password.decode("utf-8", "replace") if connect.password else None,
        clean_session=connect.clean_start,
        remote=remote,
        protocol=5,
    )
    return _Connect(
        client,
        connect.keep_alive,
        _Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        random_id=not connect.client_id,
        session_expiry=connect.session_expiry,
        max_packet_size=connect.maximum_packet_size,
    )


def _strings_are_utf8(body: bytes) -> bool:
    """Whether an MQTT 3.1.1 CONNECT's text fields (client id, will topic, user name) are
    well-formed UTF-8 without U+0000. amqtt would turn a bad one into the text "b'...'"
    and accept it; a body too short for its flags is left to amqtt's own checks."""
    flags = body[7] if len(body) > 7 else 0
    will, username = bool(flags & 0x04), bool(flags & 0x80)
    # The payload in order: client id, [will topic, will message], [user name], [password].
    kinds = ["text", *(["text", "binary"] if will else []), *(["text"] if username else [])]
    offset = 10  # after the variable header: protocol name, level, flags, keep-alive
    for kind in kinds:
        if offset + 2 > len(body):
            return True
        size = int.from_bytes(body[offset : offset + 2], "big")
        field, offset = body[offset + 2 : offset + 2 + size], offset + 2 + size
        if kind == "text":
            try:
                if "\x00" in field.decode("utf-8"):
                    return False
            except UnicodeDecodeError:
                return False
    return True


def _check_connect(connect: ConnectPacket) -> int | None:
    """The CONNACK refusal code for a malformed MQTT 3.1.1 CONNECT, or None."""
    if connect.proto_name != "MQTT":
        return UNACCEPTABLE_PROTOCOL_VERSION
    if connect.variable_header is None or connect.payload is None:
        return IDENTIFIER_REJECTED
    if not connect.clean_session_flag and connect.payload.client_id_is_random:
        return IDENTIFIER_REJECTED  # [MQTT-3.1.3-8]
    if connect.password_flag and not connect.username_flag:
        return BAD_USERNAME_PASSWORD
    return None


# CONNACK return codes of MQTT 3.1.1 and the MQTT 5 reason codes that say the same.
_V5_REFUSALS = {
    UNACCEPTABLE_PROTOCOL_VERSION: mqtt5.UNSUPPORTED_PROTOCOL_VERSION,
    IDENTIFIER_REJECTED: mqtt5.CLIENT_IDENTIFIER_NOT_VALID,
    SERVER_UNAVAILABLE: mqtt5.SERVER_UNAVAILABLE,
    BAD_USERNAME_PASSWORD: mqtt5.BAD_USER_NAME_OR_PASSWORD,
    NOT_AUTHORIZED: mqtt5.NOT_AUTHORIZED,
}


# MQTT 5 refusals that 3.1.1 can only call "server unavailable" (the rest: not authorized).
_V311_UNAVAILABLE = frozenset(
    {mqtt5.SERVER_BUSY, mqtt5.CONNECTION_RATE_EXCEEDED, mqtt5.QUOTA_EXCEEDED}
)


async def _refuse(writer: WriterAdapter, version: int, code: int) -> None:
    """Answer a refused CONNECT (in the client's protocol version) and close."""
    if version == mqtt5.PROTOCOL_LEVEL:
        reason = _V5_REFUSALS.get(code, code)
        try:
            packet = mqtt5.connack(False, reason)
        except ValueError:  # not a CONNACK reason code
            packet = mqtt5.connack(False, mqtt5.UNSPECIFIED_ERROR)
    else:
        if code >= 0x80:
            code = SERVER_UNAVAILABLE if code in _V311_UNAVAILABLE else NOT_AUTHORIZED
        packet = ConnackPacket.build(0, code).to_bytes()
    with contextlib.suppress(ConnectionError, OSError):
        writer.write(packet)
        await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.close()


async def _close(writer: WriterAdapter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await writer.close()  # idempotent; the handler may have closed it already
    # amqtt's adapter marks itself closed before draining; a reset peer makes the drain
    # raise and the transport stays open. Close the stream itself too.
    stream = getattr(writer, "_writer", None)
    if isinstance(stream, asyncio.StreamWriter):
        stream.close()


async def _start_tls(writer: WriterAdapter, context: ssl.SSLContext) -> None:
    if not isinstance(writer, StreamWriterAdapter):
        raise ConnectionError("TLS needs a TCP stream")
    stream = writer._writer
    try:
        await stream.start_tls(context)
    except BaseException as exc:
        # start_tls closed the socket, but the stream never hears of it: a polite close
        # would wait for ever.
        writer.is_closed = True
        if isinstance(exc, ssl.SSLError):
            raise ConnectionError(f"TLS handshake failed: {exc.reason}") from None
        raise
