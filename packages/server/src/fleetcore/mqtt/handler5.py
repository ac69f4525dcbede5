"""One MQTT 5.0 client after its CONNECT, on the same sessions, hooks and guarantees as 3.1.1.

Packets are read and written with our MQTT 5 codec (fleetcore.mqtt.mqtt5); sessions,
subscriptions, the outgoing in-flight set and the broker's connection lifecycle are the
3.1.1 handler's. What MQTT 5 adds here:

- refusals carry reason codes: a CONNACK says why; a PUBACK says why a message was refused
  (0x87 not authorized, 0x97 quota exceeded, 0x99 payload format invalid, ...); a SUBACK
  says 0x87 for a filter the ACL refuses (0x8F for a malformed one);
- the server says why it ends a connection (DISCONNECT 0x8E session taken over, 0x98
  administrative action, 0x8B server shutting down, 0x8D keep-alive, 0x95 packet too
  large, 0xA0 maximum connect time, 0x81/0x82 for what the client sent wrong);
- session expiry interval instead of the clean flag; CONNACK announces what we do not
  support (QoS 2, topic aliases, shared subscriptions, subscription identifiers), the
  largest packet we take and, when we cut the client's, the keep-alive to use (limits.py);
  a message larger than the client's Maximum Packet Size is not sent to it.
"""

from __future__ import annotations

import logging

from fleetcore.mqtt import mqtt5
from fleetcore.mqtt.handler import Handler, valid_filter
from fleetcore.mqtt.mqtt311 import (
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
)
from fleetcore.mqtt.session import Outgoing

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


def connack_properties(
    max_packet_bytes: int, keep_alive: int | None, assigned_client_id: str | None
) -> mqtt5.Properties:
    """What an accepting CONNACK says: this server's limits, and what it decided for the
    client (the keep-alive, when it differs from the client's; the id, when it sent none)."""
    properties = dict(SERVER_PROPERTIES)
    properties[mqtt5.MAXIMUM_PACKET_SIZE] = max_packet_bytes
    if keep_alive is not None:
        properties[mqtt5.SERVER_KEEP_ALIVE] = keep_alive
    if assigned_client_id:
        properties[mqtt5.ASSIGNED_CLIENT_IDENTIFIER] = assigned_client_id
    return properties


class Mqtt5Handler(Handler):
    """An MQTT 5 client; reading, acknowledging and sending in MQTT 5 packets."""

    protocol = mqtt5.PROTOCOL_LEVEL

    def packet(self, first: int, body: bytes) -> None:
        """One whole packet after the CONNECT; ProtocolError (with its reason) if wrong."""
        kind, flags = first >> 4, first & 0x0F
        mqtt5.check_flags(kind, flags)  # reserved fixed header bits (2.1.3): else 0x81
        if kind == PUBLISH:
            publish = mqtt5.parse_publish(flags, body)
            if mqtt5.TOPIC_ALIAS in publish.properties:
                raise mqtt5.ProtocolError(mqtt5.TOPIC_ALIAS_INVALID, "topic aliases: maximum 0")
            if publish.qos > 1:
                raise mqtt5.ProtocolError(mqtt5.QOS_NOT_SUPPORTED, "maximum QoS is 1")
            self.inbound(
                publish.topic, publish.payload, publish.qos, publish.retain, publish.packet_id
            )
        elif kind == PUBACK:
            self.session.inflight.pop(mqtt5.parse_ack(body).packet_id, None)
        elif kind in (PUBREC, PUBREL, PUBCOMP):
            mqtt5.parse_ack(body)  # QoS 2 is refused both ways: nothing waits for these
        elif kind == SUBSCRIBE:
            subscribe = mqtt5.parse_subscribe(flags, body)
            requests = [(r.topic_filter, r.qos) for r in subscribe.requests]
            codes = self.subscribe(requests)
            reasons = [
                code if code != 0x80 else self._refusal(topic_filter)
                for code, (topic_filter, _) in zip(codes, requests, strict=True)
            ]
            self._send(mqtt5.suback(subscribe.packet_id, reasons))
        elif kind == UNSUBSCRIBE:
            unsubscribe = mqtt5.parse_unsubscribe(flags, body)
            self.unsubscribe(unsubscribe.topic_filters)
            reasons = [mqtt5.SUCCESS] * len(unsubscribe.topic_filters)
            self._send(mqtt5.unsuback(unsubscribe.packet_id, reasons))
        elif kind == PINGREQ:
            self._send(mqtt5.pingresp())
        elif kind == DISCONNECT:
            disconnect = mqtt5.parse_disconnect(body)
            # 0x04 "disconnect with will message": an end that publishes the will.
            self.disconnected(normal=disconnect.reason != mqtt5.DISCONNECT_WITH_WILL_MESSAGE)
        elif kind == CONNECT:
            raise mqtt5.ProtocolError(mqtt5.PROTOCOL_ERROR, "a second CONNECT")
        else:
            raise mqtt5.ProtocolError(mqtt5.PROTOCOL_ERROR, f"unexpected packet type {kind}")

    @staticmethod
    def _refusal(topic_filter: str) -> int:
        return mqtt5.NOT_AUTHORIZED if valid_filter(topic_filter) else mqtt5.TOPIC_FILTER_INVALID

    def protocol_error(self, reason: int) -> None:
        """Say what the client sent wrong before the connection closes."""
        self.goodbye(reason)

    def goodbye(self, reason: int) -> None:
        """Tell the client why: a DISCONNECT with the reason code."""
        self._send(mqtt5.disconnect(reason))

    def puback_bytes(self, packet_id: int, reason: int) -> bytes:
        """The PUBACK, with the application's reason code when it refused the message."""
        if not reason:
            return b"\x40\x02" + packet_id.to_bytes(2, "big")
        return mqtt5.puback(packet_id, reason)

    def publish(self, message: Outgoing, packet_id: int | None, *, dup: bool) -> None:
        """Write one PUBLISH, unless it is larger than the client takes."""
        data = mqtt5.publish(
            message.topic,
            message.payload,
            qos=message.qos,
            packet_id=packet_id,
            retain=message.retain,
            dup=dup,
        )
        if self.max_packet_size is not None and len(data) > self.max_packet_size:
            log.warning("mqtt5_packet_too_large_for_client", extra={"topic": message.topic})
            if packet_id is not None:
                self.session.inflight.pop(packet_id, None)
            return
        self._send(data)
