"""One MQTT 5.0 client connection, on the same sessions, hooks and guarantees as 3.1.1.

amqtt speaks only 3.1.1, so MQTT 5 packets are read and written with our codec
(fleetcore.mqtt.mqtt5) while sessions, subscriptions, the outgoing in-flight set and the
broker's connection lifecycle stay shared with the 3.1.1 handler. What MQTT 5 adds here:

- refusals carry reason codes: a CONNACK says why; a PUBACK says why a message was refused
  (0x87 not authorized, 0x97 quota exceeded, 0x99 payload format invalid, ...); a SUBACK
  says 0x87 for a filter the ACL refuses;
- the server says why it ends a connection (DISCONNECT 0x8E session taken over, 0x98
  administrative action, 0x8B server shutting down);
- session expiry interval instead of the clean flag; CONNACK announces what we do not
  support (QoS 2, topic aliases, shared subscriptions, subscription identifiers), the
  largest packet we take and, when we cut the client's, the keep-alive to use (limits.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from amqtt.errors import NoDataError
from amqtt.mqtt.disconnect import DisconnectPacket
from amqtt.mqtt.packet import (
    CONNECT,
    DISCONNECT,
    PINGREQ,
    PUBACK,
    PUBCOMP,
    PUBLISH,
    PUBREC,
    PUBREL,
    SUBSCRIBE,
    UNSUBSCRIBE,
    MQTTFixedHeader,
)
from amqtt.mqtt.protocol.broker_handler import Subscription, UnSubscription
from amqtt.session import OutgoingApplicationMessage

from fleetcore.mqtt import mqtt5
from fleetcore.mqtt.handler import FleetProtocolHandler

log = logging.getLogger(__name__)

# What CONNACK tells every MQTT 5 client about this server.
SERVER_PROPERTIES: mqtt5.Properties = {
    mqtt5.MAXIMUM_QOS: 1,
    mqtt5.RETAIN_AVAILABLE: 1,
    mqtt5.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
    mqtt5.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
    mqtt5.SHARED_SUBSCRIPTION_AVAILABLE: 0,
    mqtt5.TOPIC_ALIAS_MAXIMUM: 0,
}
_REFUSED_SUBSCRIPTION = 0x80  # what the shared broker code answers for a refused filter
GOODBYE_TIMEOUT_S = 5.0  # longest wait to write the DISCONNECT that says why


class Mqtt5ProtocolHandler(FleetProtocolHandler):
    """An MQTT 5 connection; reading, acknowledging and sending in MQTT 5 packets."""

    protocol = 5

    def bind(self, broker: Any, principal: Any) -> None:
        """Attach the broker and principal; note the client's limits."""
        super().bind(broker, principal)
        self._unsubscribe_counts: dict[int, int] = {}
        self.max_packet_size: int | None = None

    async def _write(self, data: bytes) -> None:
        if self.writer is None:
            raise ConnectionError("not connected")
        async with self._write_lock:
            self.writer.write(data)
            await self.writer.drain()

    async def send_connack(
        self, session_present: bool, assigned_client_id: str | None, *, keep_alive: int | None
    ) -> None:
        """Accept, announcing what this server supports, its packet size limit and, when it
        differs from the client's, the keep-alive the client must use."""
        properties = dict(SERVER_PROPERTIES)
        properties[mqtt5.MAXIMUM_PACKET_SIZE] = self.broker.gate.limits.max_packet_bytes
        if keep_alive is not None:
            properties[mqtt5.SERVER_KEEP_ALIVE] = keep_alive
        if assigned_client_id:
            properties[mqtt5.ASSIGNED_CLIENT_IDENTIFIER] = assigned_client_id
        await self._write(mqtt5.connack(session_present, mqtt5.SUCCESS, properties))

    async def _goodbye(self, reason: int) -> None:
        """Tell the client why: a DISCONNECT with the reason code."""
        # Bounded: a client that stopped reading must not keep its connection by it.
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await self._write(mqtt5.disconnect(reason))

    # -- reading ------------------------------------------------------------------------

    async def _read_packet(self, header: MQTTFixedHeader) -> asyncio.Task[None] | None:
        assert self.reader is not None
        body = await self.reader.read(header.remaining_length) if header.remaining_length else b""
        if len(body) != header.remaining_length:  # a WebSocket peer left inside the packet
            raise NoDataError("the connection ended inside a packet")
        kind, flags = header.packet_type, header.flags
        try:
            return await self._dispatch5(kind, flags, body)
        except mqtt5.ProtocolError as exc:
            log.info("mqtt5_protocol_error", extra={"reason": exc.reason, "detail": str(exc)})
            await self.close(exc.reason)
            raise

    async def _dispatch5(self, kind: int, flags: int, body: bytes) -> asyncio.Task[None] | None:
        mqtt5.check_flags(kind, flags)  # reserved fixed header bits (2.1.3): else 0x81
        if kind == PUBLISH:
            publish = mqtt5.parse_publish(flags, body)
            if mqtt5.TOPIC_ALIAS in publish.properties:
                raise mqtt5.ProtocolError(mqtt5.TOPIC_ALIAS_INVALID, "topic aliases: maximum 0")
            if publish.qos > 1:
                raise mqtt5.ProtocolError(mqtt5.QOS_NOT_SUPPORTED, "maximum QoS is 1")
            self._inbound(
                publish.topic, publish.payload, publish.qos, publish.retain, publish.packet_id
            )
        elif kind in (PUBACK, PUBREC, PUBCOMP):
            ack = mqtt5.parse_ack(body)
            waiter = self._puback_waiters.get(ack.packet_id)
            if waiter is not None and not waiter.done():
                waiter.set_result(ack)
        elif kind == PUBREL:
            mqtt5.parse_ack(body)  # QoS 2 is refused above: nothing waits for a PUBREL
        elif kind == SUBSCRIBE:
            subscribe = mqtt5.parse_subscribe(flags, body)
            topics = [(r.topic_filter, r.qos) for r in subscribe.requests]
            await self._pending_subscriptions.put(Subscription(subscribe.packet_id, topics))
        elif kind == UNSUBSCRIBE:
            unsubscribe = mqtt5.parse_unsubscribe(flags, body)
            self._unsubscribe_counts[unsubscribe.packet_id] = len(unsubscribe.topic_filters)
            await self._pending_unsubscriptions.put(
                UnSubscription(unsubscribe.packet_id, unsubscribe.topic_filters)
            )
        elif kind == PINGREQ:
            await self._write(mqtt5.pingresp())
        elif kind == DISCONNECT:
            disconnect = mqtt5.parse_disconnect(body)
            # 0x04 "disconnect with will message": an end that publishes the will.
            await self.handle_disconnect(None if disconnect.reason == 0x04 else DisconnectPacket())
        elif kind == CONNECT:
            raise mqtt5.ProtocolError(mqtt5.PROTOCOL_ERROR, "a second CONNECT")
        else:
            raise mqtt5.ProtocolError(mqtt5.PROTOCOL_ERROR, f"unexpected packet type {kind}")
        return None

    # -- answers ------------------------------------------------------------------------

    async def _send_ack(self, packet_id: int, qos: int, reason: int) -> None:
        await self._write(mqtt5.puback(packet_id, reason))

    def _puback_bytes(self, packet_id: int, reason: int) -> bytes:
        return mqtt5.puback(packet_id, reason)

    async def mqtt_acknowledge_subscription(self, packet_id: int, return_codes: list[int]) -> None:
        """SUBACK: granted QoS, or 0x87 for a filter the ACL refuses."""
        reasons = [
            mqtt5.NOT_AUTHORIZED if code == _REFUSED_SUBSCRIPTION else code for code in return_codes
        ]
        await self._write(mqtt5.suback(packet_id, reasons))

    async def mqtt_acknowledge_unsubscription(self, packet_id: int) -> None:
        """UNSUBACK with a success reason per filter."""
        count = self._unsubscribe_counts.pop(packet_id, 1)
        await self._write(mqtt5.unsuback(packet_id, [mqtt5.SUCCESS] * count))

    # -- sending ------------------------------------------------------------------------

    async def mqtt_publish(
        self,
        topic: str,
        data: bytes | bytearray,
        qos: int | None,
        retain: bool,
        ack_timeout: int | None = None,
    ) -> OutgoingApplicationMessage:
        """QoS 0 is written at once; QoS 1 goes through the in-flight flow."""
        assert self.session is not None
        if qos:
            packet_id = self.session.next_packet_id
            message = OutgoingApplicationMessage(packet_id, topic, 1, data, retain)
            await self._handle_qos1_message_flow(message)
            return message
        message = OutgoingApplicationMessage(None, topic, 0, data, retain)
        await self._send_publish(message, dup=False)
        return message

    async def _send_publish(self, message: OutgoingApplicationMessage, *, dup: bool) -> None:
        data = mqtt5.publish(
            message.topic,
            bytes(message.data),
            qos=message.qos or 0,
            packet_id=message.packet_id,
            retain=message.retain,
            dup=dup,
        )
        if self.max_packet_size is not None and len(data) > self.max_packet_size:
            log.warning("mqtt5_packet_too_large_for_client", extra={"topic": message.topic})
            return
        await self._write(data)
        message.publish_packet = message.build_publish_packet(dup=dup)  # marks it as sent
