"""Reading an MQTT 3.1.1 packet after CONNECT: amqtt's packet classes, held to the fixed header.

amqtt 0.12.1 reads a packet's fields straight from the connection and trusts each field's
own length over the packet's Remaining Length: a PINGREQ or PUBACK with bytes to spare, a
PUBLISH whose topic runs past its packet, or a SUBSCRIBE whose filter is not UTF-8 (amqtt
then makes it the text "b'...'", which also throws its byte count off) leaves the reader in
the middle of a packet, and what follows is read as packets made of the previous one's
bytes. Here the body is read whole, decoded from that buffer, and must re-encode to exactly
those bytes; anything else is a malformed packet, and the connection ends (MQTT 3.1.1
[MQTT-2.2.2-2], [MQTT-1.5.3-1], [MQTT-1.5.3-2], [MQTT-3.8.3-3], [MQTT-3.8.3-4],
[MQTT-3.10.3-2]).
"""

from __future__ import annotations

from typing import Any

from amqtt.adapters import BufferReader, ReaderAdapter
from amqtt.errors import MQTTError, NoDataError
from amqtt.mqtt import packet_class
from amqtt.mqtt.packet import MQTTFixedHeader
from amqtt.mqtt.publish import PublishPacket
from amqtt.mqtt.subscribe import SubscribePacket
from amqtt.mqtt.unsubscribe import UnsubscribePacket

from fleetcore.mqtt import mqtt5


async def read_packet(reader: ReaderAdapter, header: MQTTFixedHeader) -> Any:
    """The packet whose fixed header was just read; MQTTError if it is malformed."""
    size = header.remaining_length
    body = await reader.read(size) if size else b""
    if len(body) != size:  # a WebSocket reader returns what it has when the peer leaves
        raise NoDataError("the connection ended inside a packet")
    return await decode_packet(header, body)


async def decode_packet(header: MQTTFixedHeader, body: bytes) -> Any:
    """A packet from its fixed header and body; MQTTError if the body is not exactly one."""
    try:
        mqtt5.check_flags(header.packet_type, header.flags)  # the same table as 3.1.1's
    except mqtt5.ProtocolError as exc:
        raise MQTTError(str(exc)) from None
    packet = await packet_class(header).from_stream(BufferReader(body), fixed_header=header)
    variable = packet.variable_header.to_bytes() if packet.variable_header is not None else b""
    payload = (
        packet.payload.to_bytes(packet.fixed_header, packet.variable_header)
        if packet.payload is not None
        else b""
    )
    if bytes(variable) + bytes(payload) != body:
        raise MQTTError(f"malformed {type(packet).__name__}: its fields do not fill its body")
    if isinstance(packet, PublishPacket) and "\x00" in packet.topic_name:
        raise MQTTError("the PUBLISH topic holds U+0000")
    if isinstance(packet, SubscribePacket | UnsubscribePacket):
        _check_filters(packet)
    return packet


def _check_filters(packet: SubscribePacket | UnsubscribePacket) -> None:
    topics = packet.payload.topics if packet.payload is not None else []
    if not topics:
        raise MQTTError(f"{type(packet).__name__} without any topic filter")
    for topic in topics:
        topic_filter, qos = topic if isinstance(packet, SubscribePacket) else (topic, 0)
        if "\x00" in topic_filter:
            raise MQTTError("a topic filter holds U+0000")
        if qos not in (0, 1, 2):  # also any reserved bit set
            raise MQTTError(f"requested QoS byte {qos:#04x}")
