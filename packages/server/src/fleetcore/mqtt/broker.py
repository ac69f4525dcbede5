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

Messages published by devices are never fanned out to other clients: the application is
the only consumer, and it sends to a device with `deliver`, which reaches that device's
own sessions alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.connack import (
    BAD_USERNAME_PASSWORD,
    CONNECTION_ACCEPTED,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    UNACCEPTABLE_PROTOCOL_VERSION,
    ConnackPacket,
)
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import CONNECT, RESERVED_0, RESERVED_15, MQTTFixedHeader
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import INCOMING, IncomingApplicationMessage, OutgoingApplicationMessage, Session
from amqtt.utils import gen_client_id

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0
PUBACK_TIMEOUT_S = 10.0
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
    "Principal",
    "Refused",
]


class Principal(Protocol):
    """Who is connected: `key` names them (a device id); sessions are keyed by it."""

    @property
    def key(self) -> str: ...


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a CONNECT says about the client."""

    client_id: str
    username: str | None
    password: str | None
    clean_session: bool
    remote: str


@dataclass(frozen=True, slots=True)
class Inbound:
    """One PUBLISH (or last will) from an authenticated client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    will: bool = False


class Refused(Exception):
    """Authentication refused; `code` is the CONNACK return code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BrokerHooks(Protocol):
    """What the application decides; the broker only moves packets."""

    async def authenticate(self, client: ClientInfo) -> Principal:
        """The principal behind these credentials, or raise Refused."""
        ...

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        """Whether this principal may subscribe to this filter."""
        ...

    def accept(self, principal: Principal, message: Inbound) -> Awaitable[None] | None:
        """Take a message, synchronously and in order; return what to await before acking.

        Must not raise: a message the application cannot use becomes its own record
        (a dead letter), and the client is acknowledged all the same.
        """
        ...

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        """Retained (topic, payload) pairs for a new subscription of this principal."""
        ...

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        """A connection was accepted."""
        ...

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        """A connection ended (not called when it was taken over by a new one)."""
        ...


@dataclass(eq=False)
class _Connection:
    key: str
    principal: Principal
    client: ClientInfo
    handler: FleetProtocolHandler
    session: Session
    taken_over: bool = False
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class FleetProtocolHandler(BrokerProtocolHandler):
    """One client connection: reads packets and hands PUBLISH to the broker inline."""

    broker: FleetBroker
    principal: Principal

    def bind(self, broker: FleetBroker, principal: Principal) -> None:
        """Attach the broker and principal this connection serves."""
        self.broker = broker
        self.principal = principal
        self._acks: set[asyncio.Task[None]] = set()

    async def _reader_loop(self) -> None:
        # Replaces amqtt's loop: PUBLISH is dispatched synchronously (in order, before the
        # next read); a keep-alive timeout (1.5 x) and any protocol error end the connection.
        assert self.session is not None
        assert self._reader_ready is not None
        keep_alive = self.session.keep_alive
        timeout = keep_alive * 1.5 if keep_alive > 0 else None
        tasks: set[asyncio.Task[None]] = set()
        self._reader_ready.set()
        try:
            while self.reader is not None:
                header = await asyncio.wait_for(MQTTFixedHeader.from_stream(self.reader), timeout)
                if header is None or header.packet_type in (RESERVED_0, RESERVED_15):
                    break
                packet = await packet_class(header).from_stream(self.reader, fixed_header=header)
                if isinstance(packet, PublishPacket):
                    self._on_publish(packet)
                    continue
                task = self._dispatch(packet)
                if task is not None:
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
        except TimeoutError:
            log.info("mqtt_keepalive_expired", extra={"client": self.session.client_id})
        except (MQTTError, NoDataError, AMQTTError, ConnectionError, asyncio.IncompleteReadError):
            log.debug("mqtt_read_ended", exc_info=True)
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("mqtt_reader_failed")
        finally:
            for task in tasks:
                task.cancel()
            await self.handle_connection_closed()
            self._reader_stopped.set()
            await self.stop()

    def _dispatch(self, packet: Any) -> asyncio.Task[None] | None:
        handler = {
            PubackPacket: self.handle_puback,
            PubrecPacket: self.handle_pubrec,
            PubrelPacket: self.handle_pubrel,
            PubcompPacket: self.handle_pubcomp,
            PingReqPacket: self.handle_pingreq,
            SubscribePacket: self.handle_subscribe,
            UnsubscribePacket: self.handle_unsubscribe,
            DisconnectPacket: self.handle_disconnect,
            ConnectPacket: self.handle_connect,  # a second CONNECT: amqtt ends the connection
        }.get(type(packet))
        if handler is None:
            log.info("mqtt_unexpected_packet", extra={"packet": type(packet).__name__})
            return None
        return asyncio.create_task(handler(packet))

    def _on_publish(self, packet: PublishPacket) -> None:
        assert self.session is not None
        topic, qos = packet.topic_name, packet.qos or QOS_0
        packet_id = packet.variable_header.packet_id if packet.variable_header else None
        if qos == QOS_2 and packet_id in self.session.inflight_in:
            return  # a retransmission of a message we already took; PUBREC is on its way
        durable: Awaitable[None] | None = None
        if topic and not any(ch in topic for ch in "+#"):
            durable = self.broker.hooks.accept(
                self.principal,
                Inbound(topic, bytes(packet.data or b""), qos, bool(packet.retain_flag)),
            )
        else:
            log.info("mqtt_invalid_topic", extra={"client": self.session.client_id})
        if qos == QOS_0 or packet_id is None:
            return
        if qos == QOS_2:
            message = IncomingApplicationMessage(packet_id, topic, qos, packet.data, False)
            self.session.inflight_in[packet_id] = message
        task = asyncio.create_task(self._acknowledge(packet_id, qos, durable))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)

    async def _acknowledge(self, packet_id: int, qos: int, durable: Awaitable[None] | None) -> None:
        try:
            if durable is not None:
                await asyncio.shield(durable)
            await self._send_ack(packet_id, qos)
        except (ConnectionError, AMQTTError, MQTTError, asyncio.CancelledError):
            # The connection went away first: the message is stored all the same and the
            # client, never acknowledged, sends it again (de-duplicated on storage).
            log.debug("mqtt_ack_not_sent", exc_info=True)
        except Exception:
            # Not stored: no acknowledgement. End the connection so the client resends.
            log.warning("mqtt_message_not_stored", exc_info=True)
            await self.handle_connection_closed()

    async def _retry_deliveries(self) -> None:
        # amqtt waits for every resend before the connection is served; resend in the
        # background instead, in packet order.
        assert self.session is not None
        for message in list(self.session.inflight_out.values()):
            task = asyncio.create_task(self.broker._resend(self, message))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _send_ack(self, packet_id: int, qos: int) -> None:
        assert self.session is not None
        if qos == QOS_1:
            await self._send_packet(PubackPacket.build(packet_id))
            return
        waiter: asyncio.Future[PubrelPacket] = asyncio.get_running_loop().create_future()
        self._pubrel_waiters[packet_id] = waiter
        try:
            await self._send_packet(PubrecPacket.build(packet_id))
            await waiter
            await self._send_packet(PubcompPacket.build(packet_id))
        finally:
            self._pubrel_waiters.pop(packet_id, None)
            self.session.inflight_in.pop(packet_id, None)

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # Outgoing only (incoming PUBLISH never reaches amqtt's flow). Unlike amqtt, a
        # message leaves the session only when its PUBACK arrives, so a persistent session
        # gets it again (DUP) when it reconnects.
        assert self.session is not None
        assert app_message.packet_id is not None
        if app_message.direction == INCOMING:  # pragma: no cover - not routed here
            raise AMQTTError("incoming QoS 1 is handled by _on_publish")
        packet_id = app_message.packet_id
        if isinstance(app_message, OutgoingApplicationMessage):
            self.session.inflight_out[packet_id] = app_message
        dup = app_message.publish_packet is not None
        publish = app_message.build_publish_packet(dup=dup)
        waiter: asyncio.Future[PubackPacket] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_packet(publish)
            app_message.publish_packet = publish
            app_message.puback_packet = await asyncio.wait_for(waiter, PUBACK_TIMEOUT_S)
            self.session.inflight_out.pop(packet_id, None)
        finally:
            self._puback_waiters.pop(packet_id, None)


class FleetBroker(Broker):
    """amqtt's broker with the application deciding who connects, what they may do and
    where their messages go (see the module docstring for what is replaced and why)."""

    def __init__(self, config: dict[str, Any], hooks: BrokerHooks) -> None:
        super().__init__({**config, "plugins": {}})
        self.hooks = hooks
        self.connect_timeout_s = (
            CONNECT_TIMEOUT_S  # a client silent this long after opening is closed
        )
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

    async def _client_connected(
        self, listener_name: str, reader: ReaderAdapter, writer: WriterAdapter
    ) -> None:
        server = self._servers.get(listener_name)
        if server is None:
            await writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._serving.add(task)
        await server.acquire_connection()
        try:
            await self._serve(reader, writer)
        except (AMQTTError, MQTTError, NoDataError, ConnectionError, TimeoutError) as exc:
            log.info("mqtt_connection_ended", extra={"reason": repr(exc)})
        except asyncio.IncompleteReadError:
            log.info("mqtt_connection_ended", extra={"reason": "incomplete packet"})
        finally:
            with contextlib.suppress(ConnectionError, OSError):
                await writer.close()  # idempotent; the handler may have closed it already
            server.release_connection()
            if task is not None:
                self._serving.discard(task)

    async def _serve(self, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        peer = writer.get_peer_info()
        remote = f"{peer[0]}:{peer[1]}" if peer else "unknown"
        connect = await asyncio.wait_for(_read_connect(reader), self.connect_timeout_s)
        if connect is None:
            log.info("mqtt_not_a_connect", extra={"remote": remote})
            await writer.close()
            return
        refusal = _check_connect(connect)
        if refusal is not None:
            await _refuse(writer, refusal)
            return
        random_id = connect.payload is not None and connect.payload.client_id_is_random
        client = ClientInfo(
            client_id="" if random_id else (connect.client_id or ""),
            username=connect.username,
            password=connect.password,
            clean_session=bool(connect.clean_session_flag),
            remote=remote,
        )
        try:
            principal = await self.hooks.authenticate(client)
        except Refused as exc:
            log.info("mqtt_refused", extra={"remote": remote, "reason": exc.reason})
            await _refuse(writer, exc.code)
            return
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
            session.clean_session = client.clean_session
            session.will_flag = bool(connect.will_flag)
            session.will_retain = bool(connect.will_retain_flag)
            session.will_qos = connect.will_qos
            session.will_topic = connect.will_topic
            session.will_message = connect.will_message
            session.keep_alive = max(connect.keep_alive, 0)
            session.username = principal.key  # the token never stays in memory here
            session.password = None
            session.remote_address = remote
            handler = FleetProtocolHandler(self.plugins_manager, loop=self._loop)
            handler.bind(self, principal)
            handler.attach(session, reader, writer)
            self._sessions[key] = (session, handler)
            self._keys_of[principal.key].add(key)
            connection = _Connection(key, principal, client, handler, session)
            self._connections[key] = connection
            if session.transitions.is_connected():  # the old connection did not end in time
                session.transitions.disconnect()
            session.transitions.connect()
            await handler._send_packet(ConnackPacket.build(int(present), CONNECTION_ACCEPTED))
        try:
            await self.hooks.connected(principal, client)
            await handler.start()  # also resends unacknowledged outgoing messages
            await self._send_offline(session, handler)
            await self._run(connection)
        finally:
            connection.finished.set()

    async def _take_over(self, old: _Connection) -> None:
        """Close the connection a new CONNECT replaces and wait until it is gone."""
        old.taken_over = True
        await old.handler.stop()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(old.finished.wait(), 5)

    async def _run(self, connection: _Connection) -> None:
        handler = connection.handler
        disconnect = asyncio.ensure_future(handler.wait_disconnect())
        subscribe = asyncio.ensure_future(handler.get_next_pending_subscription())
        unsubscribe = asyncio.ensure_future(handler.get_next_pending_unsubscription())
        try:
            while True:
                done, _ = await asyncio.wait(
                    [disconnect, subscribe, unsubscribe], return_when=asyncio.FIRST_COMPLETED
                )
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
                await connection.handler.stop()
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
            await connection.handler.stop()
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


def topic_matches(topic: str, topic_filter: str) -> bool:
    """Whether an MQTT topic matches a subscription filter (+ one level, # the rest)."""
    if topic.startswith("$") and topic_filter.startswith(("+", "#")):
        return False
    levels, parts = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return index == len(levels) - 1
        if index >= len(parts) or level not in ("+", parts[index]):
            return False
    return len(levels) == len(parts)


async def _read_connect(reader: ReaderAdapter) -> ConnectPacket | None:
    """The first packet if it is a CONNECT, else None ([MQTT-3.1.0-1])."""
    header = await MQTTFixedHeader.from_stream(reader)
    if header is None or header.packet_type != CONNECT:
        return None
    return await ConnectPacket.from_stream(reader, fixed_header=header)


def _check_connect(connect: ConnectPacket) -> int | None:
    """The CONNACK refusal code for a malformed or unsupported CONNECT, or None."""
    if connect.proto_level != _MQTT_311 or connect.proto_name != "MQTT":
        return UNACCEPTABLE_PROTOCOL_VERSION
    if connect.variable_header is None or connect.payload is None:
        return IDENTIFIER_REJECTED
    if not connect.clean_session_flag and connect.payload.client_id_is_random:
        return IDENTIFIER_REJECTED  # [MQTT-3.1.3-8]
    if connect.password_flag and not connect.username_flag:
        return BAD_USERNAME_PASSWORD
    return None


async def _refuse(writer: WriterAdapter, code: int) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        await ConnackPacket.build(0, code).to_stream(writer)
        await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        await writer.close()
