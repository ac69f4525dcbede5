"""One MQTT 3.1.1 client connection: amqtt's protocol handler with our read loop.

PUBLISH is handed to the application synchronously, in order, before the next packet is
read, and acknowledged only when the application says it is durable (see broker.py for the
amqtt defects this replaces). The MQTT 5 handler (handler5.py) extends this class.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from functools import partial
from typing import TYPE_CHECKING, Any

from amqtt.adapters import StreamWriterAdapter
from amqtt.errors import AMQTTError, MQTTError, NoDataError
from amqtt.mqtt.connack import CONNECTION_ACCEPTED, ConnackPacket
from amqtt.mqtt.connect import ConnectPacket
from amqtt.mqtt.constants import QOS_0, QOS_1, QOS_2
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import RESERVED_0, RESERVED_15, MQTTFixedHeader
from amqtt.mqtt.pingreq import PingReqPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.mqtt.puback import PubackPacket
from amqtt.mqtt.pubcomp import PubcompPacket
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.pubrec import PubrecPacket
from amqtt.mqtt.pubrel import PubrelPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket
from amqtt.session import INCOMING, IncomingApplicationMessage, OutgoingApplicationMessage

from fleetcore.mqtt import metrics, mqtt311
from fleetcore.mqtt.hooks import Inbound, Principal

if TYPE_CHECKING:
    from fleetcore.mqtt.broker import FleetBroker

log = logging.getLogger(__name__)

PUBACK_TIMEOUT_S = 10.0
# Server-initiated ends, as MQTT 5 reason codes (3.1.1 just closes the connection).
SESSION_TAKEN_OVER = 0x8E
ADMINISTRATIVE_ACTION = 0x98
SERVER_SHUTTING_DOWN = 0x8B
KEEP_ALIVE_TIMEOUT = 0x8D
PACKET_TOO_LARGE = 0x95
# Messages of one connection handed to the application and not yet durable; past this the
# connection is read no further until some are (a slow database pushes back on the client
# through TCP instead of growing memory with every message it sends).
MAX_UNSTORED = 100


class FleetProtocolHandler(BrokerProtocolHandler):
    """One client connection: reads packets and hands PUBLISH to the broker inline."""

    protocol = 4
    broker: FleetBroker
    principal: Principal

    def bind(self, broker: FleetBroker, principal: Principal) -> None:
        """Attach the broker and principal this connection serves."""
        self.broker = broker
        self.principal = principal
        self._acks: set[asyncio.Task[None]] = set()
        self._unstored = 0
        self._room = asyncio.Event()

    # -- what the broker calls, per protocol version ----------------------------------

    async def send_connack(
        self, session_present: bool, assigned_client_id: str | None, *, keep_alive: int | None
    ) -> None:
        """Accept the connection (3.1.1 cannot announce the keep-alive it enforces)."""
        await self._send_packet(ConnackPacket.build(int(session_present), CONNECTION_ACCEPTED))

    async def close(self, reason: int) -> None:
        """End the connection from the server side."""
        await self._goodbye(reason)
        await self.stop()

    async def _goodbye(self, reason: int) -> None:
        """Tell the client why the server ends the connection: 3.1.1 has no way to."""

    # -- reading ------------------------------------------------------------------------

    async def _reader_loop(self) -> None:
        # Replaces amqtt's loop: PUBLISH is dispatched synchronously (in order, before the
        # next read); a keep-alive timeout (1.5 x) and any protocol error end the connection.
        assert self.session is not None
        assert self._reader_ready is not None
        keep_alive = self.session.keep_alive  # the broker caps it (limits.keep_alive)
        timeout = keep_alive * 1.5 if keep_alive > 0 else None
        limits = self.broker.gate.limits
        tasks: set[asyncio.Task[None]] = set()
        self._reader_ready.set()
        try:
            while self.reader is not None:
                header = await asyncio.wait_for(MQTTFixedHeader.from_stream(self.reader), timeout)
                if header is None or header.packet_type in (RESERVED_0, RESERVED_15):
                    break
                if limits.packet_too_large(header.remaining_length):
                    # Closed unread: the declared length is the client's word, not bytes.
                    metrics.CLOSED.labels("packet_too_large").inc()
                    log.info("mqtt_packet_too_large", extra={"client": self.session.client_id})
                    await self._goodbye(PACKET_TOO_LARGE)
                    break
                task = await self._read_packet(header)
                if task is not None:
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                while self._unstored >= MAX_UNSTORED:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            metrics.CLOSED.labels("keepalive").inc()
            log.info("mqtt_keepalive_expired", extra={"client": self.session.client_id})
            await self._goodbye(KEEP_ALIVE_TIMEOUT)
        except (MQTTError, NoDataError, AMQTTError, ConnectionError, asyncio.IncompleteReadError):
            log.debug("mqtt_read_ended", exc_info=True)
        except ValueError:  # a malformed MQTT 5 packet (mqtt5.ProtocolError)
            log.info("mqtt_protocol_error", exc_info=True)
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

    async def _read_packet(self, header: MQTTFixedHeader) -> asyncio.Task[None] | None:
        assert self.reader is not None
        packet = await mqtt311.read_packet(self.reader, header)  # held to its length
        if isinstance(packet, PublishPacket):
            packet_id = packet.variable_header.packet_id if packet.variable_header else None
            self._inbound(
                packet.topic_name,
                bytes(packet.data or b""),
                packet.qos or QOS_0,
                bool(packet.retain_flag),
                packet_id,
            )
            return None
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

    # -- inbound PUBLISH ------------------------------------------------------------------

    def _inbound(
        self, topic: str, payload: bytes, qos: int, retain: bool, packet_id: int | None
    ) -> None:
        assert self.session is not None
        if qos == QOS_2 and packet_id in self.session.inflight_in:
            return  # a retransmission of a message we already took; PUBREC is on its way
        verdict: Awaitable[object] | int | None = None
        if topic and not any(ch in topic for ch in "+#"):
            verdict = self.broker.hooks.accept(self.principal, Inbound(topic, payload, qos, retain))
        else:
            log.info("mqtt_invalid_topic", extra={"client": self.session.client_id})
            verdict = 0x90  # topic name invalid
        if isinstance(verdict, asyncio.Future) and not verdict.done():
            self._hold(verdict)
        if qos == QOS_0 or packet_id is None:
            return
        if qos == QOS_2:
            message = IncomingApplicationMessage(packet_id, topic, qos, payload, False)
            self.session.inflight_in[packet_id] = message
        durable = None if isinstance(verdict, int) else verdict
        reason = verdict if isinstance(verdict, int) else 0
        if qos == QOS_1 and (durable is None or isinstance(durable, asyncio.Future)):
            # The hot path: no task per message. The PUBACK is written when the future
            # (the pipeline's commit, a gateway task) completes, or now if nothing to wait.
            if durable is None:
                self._write_puback(packet_id, reason)
            else:
                durable.add_done_callback(partial(self._puback_when_done, packet_id, reason))
            return
        task = asyncio.create_task(self._acknowledge(packet_id, qos, durable, reason))
        self._acks.add(task)
        task.add_done_callback(self._acks.discard)
        if durable is not None and not isinstance(durable, asyncio.Future):
            self._hold(task)

    def _hold(self, pending: asyncio.Future[Any]) -> None:
        """Count a message not yet durable until it is (see MAX_UNSTORED)."""
        self._unstored += 1
        pending.add_done_callback(self._durable)

    def _durable(self, _: asyncio.Future[Any]) -> None:
        self._unstored -= 1
        if self._unstored < MAX_UNSTORED:
            self._room.set()

    def _puback_when_done(self, packet_id: int, reason: int, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            # Not stored: no acknowledgement. End the connection so the client resends.
            log.warning("mqtt_message_not_stored", extra={"error": repr(future.exception())})
            asyncio.get_running_loop().create_task(self.handle_connection_closed())
            return
        answer = future.result()  # a gateway task may answer an MQTT 5 reason code
        self._write_puback(packet_id, answer if isinstance(answer, int) else reason)

    def _write_puback(self, packet_id: int, reason: int) -> None:
        # One write call is atomic on the transport, so no lock is needed; a gone connection
        # just means the client sends the message again (storage de-duplicates it).
        if self.writer is None or getattr(self.writer, "is_closed", False):
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            self.writer.write(self._puback_bytes(packet_id, reason))
        if not isinstance(self.writer, StreamWriterAdapter):
            # WebSocket: the adapter buffers until drained (one frame per drain).
            task = asyncio.get_running_loop().create_task(self._drain())
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _drain(self) -> None:
        assert self.writer is not None
        with contextlib.suppress(ConnectionError, RuntimeError, OSError):
            async with self._write_lock:
                await self.writer.drain()

    def _puback_bytes(self, packet_id: int, reason: int) -> bytes:
        return b"\x40\x02" + packet_id.to_bytes(2, "big")

    async def _acknowledge(
        self, packet_id: int, qos: int, durable: Awaitable[object] | None, reason: int
    ) -> None:
        try:
            if durable is not None:
                await asyncio.shield(durable)
            await self._send_ack(packet_id, qos, reason)
        except (ConnectionError, AMQTTError, MQTTError, asyncio.CancelledError):
            # The connection went away first: the message is stored all the same and the
            # client, never acknowledged, sends it again (de-duplicated on storage).
            log.debug("mqtt_ack_not_sent", exc_info=True)
        except Exception:
            # Not stored: no acknowledgement. End the connection so the client resends.
            log.warning("mqtt_message_not_stored", exc_info=True)
            await self.handle_connection_closed()

    async def _send_ack(self, packet_id: int, qos: int, reason: int) -> None:
        assert self.session is not None
        if qos == QOS_1:
            await self._send_packet(PubackPacket.build(packet_id))
            return
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pubrel_waiters[packet_id] = waiter
        try:
            await self._send_packet(PubrecPacket.build(packet_id))
            await waiter
            await self._send_packet(PubcompPacket.build(packet_id))
        finally:
            self._pubrel_waiters.pop(packet_id, None)
            self.session.inflight_in.pop(packet_id, None)

    # -- outbound -------------------------------------------------------------------------

    async def _retry_deliveries(self) -> None:
        # amqtt waits for every resend before the connection is served; resend in the
        # background instead, in packet order.
        assert self.session is not None
        for message in list(self.session.inflight_out.values()):
            task = asyncio.create_task(self.broker._resend(self, message))
            self._acks.add(task)
            task.add_done_callback(self._acks.discard)

    async def _handle_qos1_message_flow(
        self, app_message: OutgoingApplicationMessage | IncomingApplicationMessage
    ) -> None:
        # Outgoing only (incoming PUBLISH never reaches amqtt's flow). Unlike amqtt, a
        # message leaves the session only when its PUBACK arrives, so a persistent session
        # gets it again (DUP) when it reconnects.
        assert self.session is not None
        assert app_message.packet_id is not None
        if app_message.direction == INCOMING:  # pragma: no cover - not routed here
            raise AMQTTError("incoming QoS 1 is handled by _inbound")
        packet_id = app_message.packet_id
        if isinstance(app_message, OutgoingApplicationMessage):
            self.session.inflight_out[packet_id] = app_message
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._puback_waiters[packet_id] = waiter
        try:
            await self._send_publish(app_message, dup=app_message.publish_packet is not None)
            app_message.puback_packet = await asyncio.wait_for(waiter, PUBACK_TIMEOUT_S)
            self.session.inflight_out.pop(packet_id, None)
        finally:
            self._puback_waiters.pop(packet_id, None)

    async def _send_publish(self, message: OutgoingApplicationMessage, *, dup: bool) -> None:
        publish = message.build_publish_packet(dup=dup)
        await self._send_packet(publish)
        message.publish_packet = publish
