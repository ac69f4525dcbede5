"""The pure MQTT 5.0 codec (fleetcore.mqtt.mqtt5): exact bytes, round trips, every refusal,
and interoperability with paho-mqtt 2, whose MQTT 5 encoders and decoders are independent of
ours.

paho is used three ways: its Properties class packs and unpacks property blocks; its packet
decoders (paho.mqtt._packet) read the packets our encoders build; and a real
paho Client talks to a one-connection server made of nothing but this codec, so every packet
paho sends is parsed by us and every reply paho accepts was built by us.
"""

from __future__ import annotations

import queue
import re
import socket
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from paho.mqtt import _packet as paho_packet
from paho.mqtt import client as paho
from paho.mqtt.enums import MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties as PahoProperties
from paho.mqtt.properties import VariableByteIntegers
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from fleetcore.mqtt import mqtt5 as m
from fleetcore.mqtt.mqtt5 import PacketType, ProtocolError

TIMEOUT = 10.0
MQTT5 = MQTTProtocolVersion.MQTTv5

# --- Building blocks for hand-made packets ---------------------------------------------------


def _s(text: str) -> bytes:
    """A UTF-8 Encoded String (1.5.4)."""
    raw = text.encode()
    return struct.pack("!H", len(raw)) + raw


def _bin(data: bytes) -> bytes:
    """Binary Data (1.5.6)."""
    return struct.pack("!H", len(data)) + data


def _props(*items: bytes) -> bytes:
    """A property block: Variable Byte Integer length, then the properties."""
    raw = b"".join(items)
    return m.encode_varint(len(raw)) + raw


NO_PROPS = b"\x00"


def _connect(
    *,
    flags: int = 0x02,
    keep_alive: int = 60,
    properties: bytes = NO_PROPS,
    payload: bytes = _s("c1"),
    level: int = 5,
) -> bytes:
    """A CONNECT body (everything after the fixed header)."""
    return (
        b"\x00\x04MQTT"
        + bytes([level, flags])
        + struct.pack("!H", keep_alive)
        + properties
        + payload
    )


def _will_connect(
    *,
    properties: bytes = NO_PROPS,
    will_properties: bytes = NO_PROPS,
    topic: bytes = _s("w/t"),
    payload: bytes = _bin(b"gone"),
    flags: int = 0x06,
) -> bytes:
    """A CONNECT body with a will (QoS 0 unless the flags say otherwise)."""
    return _connect(
        flags=flags, properties=properties, payload=_s("c1") + will_properties + topic + payload
    )


def _split(packet: bytes) -> tuple[int, int, bytes]:
    """(packet type, flags, body) of a complete packet; the remaining length must be exact."""
    length, offset = m.decode_varint(packet, 1)
    body = packet[offset:]
    assert len(body) == length, f"remaining length {length} but {len(body)} bytes follow"
    return packet[0] >> 4, packet[0] & 0x0F, body


def _paho_names() -> dict[int, str]:
    """paho's property identifier -> attribute name (spaces removed)."""
    names: dict[str, int] = PahoProperties(PacketTypes.PUBLISH).names
    return {ident: name.replace(" ", "") for name, ident in names.items()}


PAHO_NAMES = _paho_names()


def _paho_to_dict(properties: PahoProperties) -> dict[int, Any]:
    """paho Properties as our Properties dict (paho keeps user properties as a list)."""
    out: dict[int, Any] = {}
    for ident, name in PAHO_NAMES.items():
        if hasattr(properties, name):
            out[ident] = getattr(properties, name)
    return out


# --- Variable Byte Integer (1.5.5) ------------------------------------------------------------

VARINT_TABLE = [
    # The boundaries of Table 1-1 of the specification.
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (268_435_455, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("value", "encoded"), VARINT_TABLE)
def test_varint_matches_the_specification_table(value: int, encoded: bytes) -> None:
    assert m.encode_varint(value) == encoded
    assert m.decode_varint(encoded) == (value, len(encoded))
    # At an offset, with bytes after it that are not part of the integer.
    assert m.decode_varint(b"\xaa\xbb" + encoded + b"\xff\xff", 2) == (value, 2 + len(encoded))


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16_384, 99_999, 2_097_152, 268_435_455])
def test_varint_agrees_with_paho(value: int) -> None:
    encoded = VariableByteIntegers.encode(value)
    assert m.encode_varint(value) == encoded
    assert m.decode_varint(encoded) == VariableByteIntegers.decode(encoded)


@pytest.mark.parametrize("value", [-1, 268_435_456, 1 << 40])
def test_varint_encoder_refuses_out_of_range(value: int) -> None:
    with pytest.raises(ValueError, match="does not fit"):
        m.encode_varint(value)


def test_varint_decoder_refuses_negative_offset() -> None:
    with pytest.raises(ValueError, match="offset"):
        m.decode_varint(b"\x00", -1)


@pytest.mark.parametrize(
    ("data", "offset", "message"),
    [
        (b"", 0, "truncated"),
        (b"\x05", 1, "truncated"),
        (b"\x80", 0, "truncated"),
        (b"\xff\xff\xff", 0, "truncated"),
        (b"\x80\x80\x80\x80\x01", 0, "longer than four bytes"),
        (b"\xff\xff\xff\xff\x7f", 0, "longer than four bytes"),
        (b"\x80\x00", 0, "not minimally encoded"),
        (b"\xff\x80\x00", 0, "not minimally encoded"),
    ],
)
def test_varint_decoder_refuses_bad_encodings(data: bytes, offset: int, message: str) -> None:
    with pytest.raises(ProtocolError, match=message) as caught:
        m.decode_varint(data, offset)
    assert caught.value.reason == m.MALFORMED_PACKET
    assert isinstance(caught.value, ValueError)


def test_protocol_error_carries_reason_and_message() -> None:
    error = ProtocolError(m.PROTOCOL_ERROR, "bad thing")
    assert error.reason == 0x82
    assert str(error) == "bad thing"
    assert isinstance(error, ValueError)


def test_constants_match_paho_and_the_specification() -> None:
    names = {name: ident for ident, name in PAHO_NAMES.items()}
    ours = {
        "PayloadFormatIndicator": m.PAYLOAD_FORMAT_INDICATOR,
        "MessageExpiryInterval": m.MESSAGE_EXPIRY_INTERVAL,
        "ContentType": m.CONTENT_TYPE,
        "ResponseTopic": m.RESPONSE_TOPIC,
        "CorrelationData": m.CORRELATION_DATA,
        "SubscriptionIdentifier": m.SUBSCRIPTION_IDENTIFIER,
        "SessionExpiryInterval": m.SESSION_EXPIRY_INTERVAL,
        "AssignedClientIdentifier": m.ASSIGNED_CLIENT_IDENTIFIER,
        "ServerKeepAlive": m.SERVER_KEEP_ALIVE,
        "AuthenticationMethod": m.AUTHENTICATION_METHOD,
        "AuthenticationData": m.AUTHENTICATION_DATA,
        "RequestProblemInformation": m.REQUEST_PROBLEM_INFORMATION,
        "WillDelayInterval": m.WILL_DELAY_INTERVAL,
        "RequestResponseInformation": m.REQUEST_RESPONSE_INFORMATION,
        "ResponseInformation": m.RESPONSE_INFORMATION,
        "ServerReference": m.SERVER_REFERENCE,
        "ReasonString": m.REASON_STRING,
        "ReceiveMaximum": m.RECEIVE_MAXIMUM,
        "TopicAliasMaximum": m.TOPIC_ALIAS_MAXIMUM,
        "TopicAlias": m.TOPIC_ALIAS,
        "MaximumQoS": m.MAXIMUM_QOS,
        "RetainAvailable": m.RETAIN_AVAILABLE,
        "UserProperty": m.USER_PROPERTY,
        "MaximumPacketSize": m.MAXIMUM_PACKET_SIZE,
        "WildcardSubscriptionAvailable": m.WILDCARD_SUBSCRIPTION_AVAILABLE,
        "SubscriptionIdentifierAvailable": m.SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        "SharedSubscriptionAvailable": m.SHARED_SUBSCRIPTION_AVAILABLE,
    }
    assert ours == names
    reason_names = {
        "Success": m.SUCCESS,
        "No matching subscribers": m.NO_MATCHING_SUBSCRIBERS,
        "Unspecified error": m.UNSPECIFIED_ERROR,
        "Malformed packet": m.MALFORMED_PACKET,
        "Protocol error": m.PROTOCOL_ERROR,
        "Implementation specific error": m.IMPLEMENTATION_SPECIFIC_ERROR,
        "Unsupported protocol version": m.UNSUPPORTED_PROTOCOL_VERSION,
        "Client identifier not valid": m.CLIENT_IDENTIFIER_NOT_VALID,
        "Bad user name or password": m.BAD_USER_NAME_OR_PASSWORD,
        "Not authorized": m.NOT_AUTHORIZED,
        "Server unavailable": m.SERVER_UNAVAILABLE,
        "Server shutting down": m.SERVER_SHUTTING_DOWN,
        "Keep alive timeout": m.KEEP_ALIVE_TIMEOUT,
        "Session taken over": m.SESSION_TAKEN_OVER,
        "Topic filter invalid": m.TOPIC_FILTER_INVALID,
        "Topic name invalid": m.TOPIC_NAME_INVALID,
        "Packet identifier in use": m.PACKET_IDENTIFIER_IN_USE,
        "Receive maximum exceeded": m.RECEIVE_MAXIMUM_EXCEEDED,
        "Topic alias invalid": m.TOPIC_ALIAS_INVALID,
        "Packet too large": m.PACKET_TOO_LARGE,
        "Quota exceeded": m.QUOTA_EXCEEDED,
        "Administrative action": m.ADMINISTRATIVE_ACTION,
        "Payload format invalid": m.PAYLOAD_FORMAT_INVALID,
        "Retain not supported": m.RETAIN_NOT_SUPPORTED,
        "QoS not supported": m.QOS_NOT_SUPPORTED,
        "Shared subscription not supported": m.SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
        "Subscription identifiers not supported": m.SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
        "Wildcard subscription not supported": m.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    }
    for name, value in reason_names.items():
        assert name in ReasonCode.names[value], (name, value)
    assert m.PROTOCOL_LEVEL == 5


# --- Exact bytes -----------------------------------------------------------------------------


def test_connack_bytes() -> None:
    # 0x20, remaining length 3: flags 0, reason 0, property length 0.
    assert m.connack(False, m.SUCCESS) == b"\x20\x03\x00\x00\x00"
    assert m.connack(True, m.SUCCESS) == b"\x20\x03\x01\x00\x00"
    assert m.connack(False, m.NOT_AUTHORIZED) == b"\x20\x03\x00\x87\x00"
    with_properties = m.connack(
        True,
        m.SUCCESS,
        {m.RECEIVE_MAXIMUM: 10, m.MAXIMUM_QOS: 1, m.USER_PROPERTY: [("a", "b")]},
    )
    assert with_properties == (
        b"\x20\x0f\x01\x00\x0c"  # length 15, session present, success, 12 property bytes
        + b"\x21\x00\x0a"  # Receive Maximum 10
        + b"\x24\x01"  # Maximum QoS 1
        + b"\x26\x00\x01a\x00\x01b"  # User Property a=b
    )


def test_publish_bytes_match_the_specification_example() -> None:
    # Figure 3-9: Topic Name "a/b", Packet Identifier 10, no properties.
    variable_header = b"\x00\x03a/b\x00\x0a\x00"
    assert m.publish("a/b", b"hi", qos=1, packet_id=10) == b"\x32\x0a" + variable_header + b"hi"
    assert m.publish("a/b", b"", qos=0) == b"\x30\x06\x00\x03a/b\x00"
    assert m.publish("a/b", b"x", qos=2, packet_id=1, retain=True, dup=True) == (
        b"\x3d\x09\x00\x03a/b\x00\x01\x00x"
    )
    aliased = m.publish("", b"v", properties={m.TOPIC_ALIAS: 5})
    assert aliased == b"\x30\x07\x00\x00\x03\x23\x00\x05v"


def test_publish_with_a_long_payload_uses_a_multi_byte_remaining_length() -> None:
    payload = bytes(range(256)) * 800  # 204,800 bytes
    packet = m.publish("big", payload, qos=1, packet_id=3)
    body_length = 2 + 3 + 2 + 1 + len(payload)
    assert packet[:4] == b"\x32" + m.encode_varint(body_length)
    assert len(m.encode_varint(body_length)) == 3
    _, flags, body = _split(packet)
    assert m.parse_publish(flags, body).payload == payload


@pytest.mark.parametrize(
    ("packet", "expected"),
    [
        (m.puback(10), b"\x40\x02\x00\x0a"),
        (m.puback(10, m.NO_MATCHING_SUBSCRIBERS), b"\x40\x03\x00\x0a\x10"),
        (m.puback(0xABCD, m.NOT_AUTHORIZED, "no"), b"\x40\x09\xab\xcd\x87\x05\x1f\x00\x02no"),
        (m.puback(1, m.SUCCESS, ""), b"\x40\x07\x00\x01\x00\x03\x1f\x00\x00"),
        (m.pubrec(7), b"\x50\x02\x00\x07"),
        (m.pubrec(7, m.QUOTA_EXCEEDED), b"\x50\x03\x00\x07\x97"),
        (m.pubrel(7), b"\x62\x02\x00\x07"),
        (m.pubrel(7, m.PACKET_IDENTIFIER_NOT_FOUND), b"\x62\x03\x00\x07\x92"),
        (m.pubcomp(65535), b"\x70\x02\xff\xff"),
        (m.pubcomp(2, m.PACKET_IDENTIFIER_NOT_FOUND), b"\x70\x03\x00\x02\x92"),
        (m.suback(10, [1, 2]), b"\x90\x05\x00\x0a\x00\x01\x02"),
        (m.suback(3, [m.NOT_AUTHORIZED]), b"\x90\x04\x00\x03\x00\x87"),
        (m.unsuback(10, [0, m.NO_SUBSCRIPTION_EXISTED]), b"\xb0\x05\x00\x0a\x00\x00\x11"),
        (m.disconnect(), b"\xe0\x00"),
        (m.disconnect(m.SERVER_SHUTTING_DOWN), b"\xe0\x01\x8b"),
        (m.disconnect(m.SESSION_TAKEN_OVER, "x"), b"\xe0\x06\x8e\x04\x1f\x00\x01x"),
        (m.pingresp(), b"\xd0\x00"),
    ],
)
def test_encoder_bytes(packet: bytes, expected: bytes) -> None:
    assert packet == expected


def test_parse_connect_specification_example() -> None:
    # Figure 3-6: protocol name, version 5, flags 0xCE (user name, password, will QoS 1,
    # will flag, clean start), keep alive 10, Session Expiry Interval 10.
    variable_header = bytes.fromhex("0004 4d515454 05 ce 000a 05 1100 00000a".replace(" ", ""))
    payload = (
        _s("client-1")
        + _props(b"\x18\x00\x00\x00\x05")  # Will Delay Interval 5
        + _s("will/topic")
        + _bin(b"\x00\x01\x02")
        + _s("user")
        + _bin(b"pass\x00word")
    )
    assert m.protocol_level(variable_header + payload) == 5
    connect = m.parse_connect(variable_header + payload)
    assert connect == m.Connect(
        client_id="client-1",
        clean_start=True,
        keep_alive=10,
        username="user",
        password=b"pass\x00word",
        will=m.Will(
            topic="will/topic",
            payload=b"\x00\x01\x02",
            qos=1,
            retain=False,
            properties={m.WILL_DELAY_INTERVAL: 5},
        ),
        properties={m.SESSION_EXPIRY_INTERVAL: 10},
    )
    assert connect.session_expiry == 10
    assert connect.receive_maximum == 65535
    assert connect.maximum_packet_size is None


def test_parse_connect_minimal_and_accessors() -> None:
    connect = m.parse_connect(_connect(flags=0x00, keep_alive=0, payload=_s("")))
    assert connect == m.Connect("", False, 0, None, None, None, {})
    assert (connect.session_expiry, connect.receive_maximum, connect.maximum_packet_size) == (
        0,
        65535,
        None,
    )
    full = m.parse_connect(
        _connect(
            properties=_props(
                b"\x11\xff\xff\xff\xff",  # Session Expiry Interval: never
                b"\x21\x00\x14",  # Receive Maximum 20
                b"\x27\x00\x01\x00\x00",  # Maximum Packet Size 65536
            )
        )
    )
    assert (full.session_expiry, full.receive_maximum, full.maximum_packet_size) == (
        0xFFFFFFFF,
        20,
        65536,
    )


def test_parse_connect_password_without_user_name_and_will_retain() -> None:
    # MQTT 5 allows a password without a user name (3.1.2.9).
    connect = m.parse_connect(
        _connect(
            flags=0x40 | 0x20 | 0x10 | 0x04,
            payload=_s("c") + NO_PROPS + _s("t") + _bin(b"") + _bin(b"tok"),
        )
    )
    assert connect.username is None
    assert connect.password == b"tok"
    assert connect.will == m.Will("t", b"", 2, True, {})
    assert connect.clean_start is False


def test_protocol_level_of_other_versions() -> None:
    assert m.protocol_level(_connect(level=4)) == 4
    assert m.protocol_level(b"\x00\x04MQTT\x03") == 3


def test_parse_subscribe_specification_example() -> None:
    # Figure 3-19 (Packet Identifier 10, no properties) and Figure 3-21 ("a/b" QoS 1, "c/d" QoS 2).
    body = b"\x00\x0a\x00" + b"\x00\x03a/b\x01" + b"\x00\x03c/d\x02"
    assert m.parse_subscribe(0b0010, body) == m.Subscribe(
        packet_id=10,
        requests=[
            m.SubscriptionRequest("a/b", 1, False, False, 0),
            m.SubscriptionRequest("c/d", 2, False, False, 0),
        ],
        properties={},
    )


def test_parse_subscribe_options_and_properties() -> None:
    body = (
        b"\x00\x01"
        + _props(b"\x0b\xac\x02", b"\x26" + _s("k") + _s("v"))  # Subscription Identifier 300
        + _s("a/+")
        + bytes([0b0010_1101])  # retain handling 2, retain as published, no local, QoS 1
        + _s("$share/g/b/#")
        + bytes([0b0001_1000])  # retain handling 1, retain as published, QoS 0
        + _s("")  # filter syntax is the broker's business (SUBACK 0x8F), not the codec's
        + b"\x00"
    )
    assert m.parse_subscribe(0b0010, body) == m.Subscribe(
        packet_id=1,
        requests=[
            m.SubscriptionRequest("a/+", 1, True, True, 2),
            m.SubscriptionRequest("$share/g/b/#", 0, False, True, 1),
            m.SubscriptionRequest("", 0, False, False, 0),
        ],
        properties={m.SUBSCRIPTION_IDENTIFIER: 300, m.USER_PROPERTY: [("k", "v")]},
    )


def test_parse_unsubscribe_specification_example() -> None:
    # Figure 3.30: "a/b" and "c/d".
    body = b"\x00\x0a\x00" + b"\x00\x03a/b" + b"\x00\x03c/d"
    assert m.parse_unsubscribe(0b0010, body) == m.Unsubscribe(10, ["a/b", "c/d"], {})
    with_props = b"\x00\x0b" + _props(b"\x26" + _s("x") + _s("y")) + _s("+/#")
    assert m.parse_unsubscribe(0b0010, with_props) == m.Unsubscribe(
        11, ["+/#"], {m.USER_PROPERTY: [("x", "y")]}
    )


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", m.Disconnect(0, {})),
        (b"\x04", m.Disconnect(m.DISCONNECT_WITH_WILL_MESSAGE, {})),
        (b"\x00\x00", m.Disconnect(0, {})),  # Figure 3-24
        (
            b"\x04" + _props(b"\x11\x00\x00\x00\x00", b"\x1f" + _s("bye")),
            m.Disconnect(4, {m.SESSION_EXPIRY_INTERVAL: 0, m.REASON_STRING: "bye"}),
        ),
    ],
)
def test_parse_disconnect(body: bytes, expected: m.Disconnect) -> None:
    assert m.parse_disconnect(body) == expected


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"\x00\x05", m.Ack(5, 0, {})),
        (b"\x00\x05\x10", m.Ack(5, 0x10, {})),
        (b"\x00\x05\x00\x00", m.Ack(5, 0, {})),
        (
            b"\x01\x00\x87" + _props(b"\x1f" + _s("no"), b"\x26" + _s("a") + _s("1")),
            m.Ack(256, 0x87, {m.REASON_STRING: "no", m.USER_PROPERTY: [("a", "1")]}),
        ),
    ],
)
def test_parse_ack(body: bytes, expected: m.Ack) -> None:
    assert m.parse_ack(body) == expected


# --- Round trips -----------------------------------------------------------------------------

PUBLISH_PROPERTIES: m.Properties = {
    m.PAYLOAD_FORMAT_INDICATOR: 1,
    m.MESSAGE_EXPIRY_INTERVAL: 3600,
    m.CONTENT_TYPE: "application/json",
    m.RESPONSE_TOPIC: "replies/\u00e9t\u00e9",
    m.CORRELATION_DATA: b"\x00\xff\x00",
    m.TOPIC_ALIAS: 9,
    m.USER_PROPERTY: [("k", "1"), ("k", "2"), ("\u65e5\u672c", "\U0001f600")],
}


@pytest.mark.parametrize("qos", [0, 1, 2])
@pytest.mark.parametrize("retain", [False, True])
@pytest.mark.parametrize("properties", [{}, PUBLISH_PROPERTIES])
def test_publish_round_trip(qos: int, retain: bool, properties: m.Properties) -> None:
    packet_id = 4242 if qos else None
    dup = qos == 2
    packet = m.publish(
        "devices/\u00e9/t",
        b"\x00payload\xff",
        qos=qos,
        packet_id=packet_id,
        retain=retain,
        dup=dup,
        properties=properties,
    )
    packet_type, flags, body = _split(packet)
    assert packet_type == PacketType.PUBLISH
    m.check_flags(packet_type, flags)
    assert m.parse_publish(flags, body) == m.Publish(
        topic="devices/\u00e9/t",
        payload=b"\x00payload\xff",
        qos=qos,
        retain=retain,
        dup=dup,
        packet_id=packet_id,
        properties=properties,
    )


def test_publish_with_topic_alias_and_empty_topic_round_trips() -> None:
    _, flags, body = _split(m.publish("", b"v", qos=1, packet_id=1, properties={m.TOPIC_ALIAS: 2}))
    parsed = m.parse_publish(flags, body)
    assert (parsed.topic, parsed.properties) == ("", {m.TOPIC_ALIAS: 2})


@pytest.mark.parametrize(
    ("encoder", "packet_type"),
    [(m.pubrec, PacketType.PUBREC), (m.pubrel, PacketType.PUBREL), (m.pubcomp, PacketType.PUBCOMP)],
)
def test_qos2_acks_round_trip(encoder: Callable[..., bytes], packet_type: PacketType) -> None:
    reason = m.QUOTA_EXCEEDED if packet_type == PacketType.PUBREC else m.PACKET_IDENTIFIER_NOT_FOUND
    for packet, expected in [
        (encoder(300), m.Ack(300, 0, {})),
        (encoder(9, reason), m.Ack(9, reason, {})),
    ]:
        kind, flags, body = _split(packet)
        assert kind == packet_type
        m.check_flags(kind, flags)
        assert m.parse_ack(body) == expected


def test_puback_round_trip() -> None:
    for packet, expected in [
        (m.puback(1), m.Ack(1, 0, {})),
        (m.puback(2, m.PAYLOAD_FORMAT_INVALID), m.Ack(2, 0x99, {})),
        (m.puback(3, m.TOPIC_NAME_INVALID, "bad"), m.Ack(3, 0x90, {m.REASON_STRING: "bad"})),
    ]:
        kind, flags, body = _split(packet)
        assert kind == PacketType.PUBACK
        m.check_flags(kind, flags)
        assert m.parse_ack(body) == expected


def test_disconnect_round_trip() -> None:
    for packet, expected in [
        (m.disconnect(), m.Disconnect(0, {})),
        (m.disconnect(m.KEEP_ALIVE_TIMEOUT), m.Disconnect(0x8D, {})),
        (
            m.disconnect(m.ADMINISTRATIVE_ACTION, "kicked"),
            m.Disconnect(0x98, {m.REASON_STRING: "kicked"}),
        ),
    ]:
        kind, flags, body = _split(packet)
        assert kind == PacketType.DISCONNECT
        m.check_flags(kind, flags)
        assert m.parse_disconnect(body) == expected


@pytest.mark.parametrize(
    ("packet_type", "flags"),
    [
        (PacketType.CONNECT, 0),
        (PacketType.PUBLISH, 0b1101),
        (PacketType.PUBLISH, 0b0000),
        (PacketType.PUBACK, 0),
        (PacketType.PUBREL, 0b0010),
        (PacketType.SUBSCRIBE, 0b0010),
        (PacketType.UNSUBSCRIBE, 0b0010),
        (PacketType.PINGREQ, 0),
        (PacketType.DISCONNECT, 0),
        (PacketType.AUTH, 0),
    ],
)
def test_check_flags_accepts_valid_fixed_headers(packet_type: int, flags: int) -> None:
    m.check_flags(packet_type, flags)


# --- Our packets through paho's decoders -------------------------------------------------------

CONNACK_PROPERTIES: m.Properties = {
    m.SESSION_EXPIRY_INTERVAL: 600,
    m.ASSIGNED_CLIENT_IDENTIFIER: "auto-1",
    m.SERVER_KEEP_ALIVE: 30,
    m.AUTHENTICATION_METHOD: "SCRAM-SHA-1",
    m.AUTHENTICATION_DATA: b"\x01\x02",
    m.RESPONSE_INFORMATION: "resp/",
    m.SERVER_REFERENCE: "other:1883",
    m.REASON_STRING: "welcome",
    m.RECEIVE_MAXIMUM: 10,
    m.TOPIC_ALIAS_MAXIMUM: 4,
    m.MAXIMUM_QOS: 1,
    m.RETAIN_AVAILABLE: 0,
    m.USER_PROPERTY: [("broker", "fleetcore"), ("broker", "again")],
    m.MAXIMUM_PACKET_SIZE: 1 << 20,
    m.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
    m.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 0,
    m.SHARED_SUBSCRIPTION_AVAILABLE: 0,
}


def test_paho_decodes_our_connack_with_every_connack_property() -> None:
    kind, flags, body = _split(m.connack(True, m.SUCCESS, CONNACK_PROPERTIES))
    assert kind == PacketType.CONNACK
    decoded = paho_packet.decode_connack(0x20 | flags, body, MQTT5)
    assert decoded.flags == 1
    assert decoded.reason.value == 0
    assert decoded.properties is not None
    assert _paho_to_dict(decoded.properties) == CONNACK_PROPERTIES
    refused = paho_packet.decode_connack(0x20, _split(m.connack(False, m.BANNED))[2], MQTT5)
    assert (refused.flags, refused.reason.value, refused.reason.getName()) == (0, 0x8A, "Banned")


def test_paho_decodes_our_publish() -> None:
    properties = dict(PUBLISH_PROPERTIES)
    properties[m.SUBSCRIPTION_IDENTIFIER] = [7, 268_435_455]
    packet = m.publish(
        "cmd/\u00e9", b"reboot", qos=2, packet_id=77, retain=True, dup=True, properties=properties
    )
    _, _, body = _split(packet)
    decoded = paho_packet.decode_publish(packet[0], body, MQTT5)
    assert (decoded.dup, decoded.qos, decoded.retain, decoded.mid) == (True, 2, True, 77)
    assert decoded.topic == "cmd/\u00e9".encode()
    assert decoded.payload == b"reboot"
    assert decoded.properties is not None
    assert _paho_to_dict(decoded.properties) == properties
    single = m.publish("t", b"", properties={m.SUBSCRIPTION_IDENTIFIER: 5})
    decoded = paho_packet.decode_publish(single[0], _split(single)[2], MQTT5)
    assert decoded.properties is not None
    assert decoded.properties.SubscriptionIdentifier == [5]


def test_paho_decodes_our_acks() -> None:
    for packet, decoder, expected in [
        (m.puback(1), paho_packet.decode_puback, (1, 0, {})),
        (m.puback(2, m.NO_MATCHING_SUBSCRIBERS), paho_packet.decode_puback, (2, 0x10, {})),
        (
            m.puback(3, m.NOT_AUTHORIZED, "denied"),
            paho_packet.decode_puback,
            (3, 0x87, {m.REASON_STRING: "denied"}),
        ),
        (m.pubrec(4), paho_packet.decode_pubrec, (4, 0, {})),
        (m.pubrec(5, m.QUOTA_EXCEEDED), paho_packet.decode_pubrec, (5, 0x97, {})),
        (m.pubrel(6), paho_packet.decode_pubrel, (6, 0, {})),
        (m.pubcomp(7, m.PACKET_IDENTIFIER_NOT_FOUND), paho_packet.decode_pubcomp, (7, 0x92, {})),
    ]:
        _, _, body = _split(packet)
        decoded = decoder(packet[0], body, MQTT5)
        assert (decoded.mid, decoded.reason.value, _paho_to_dict(decoded.properties)) == expected


def test_paho_decodes_our_suback_unsuback_disconnect() -> None:
    packet = m.suback(12, [0, 1, 2, m.TOPIC_FILTER_INVALID, m.WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED])
    decoded_suback = paho_packet.decode_suback(packet[0], _split(packet)[2], MQTT5)
    assert decoded_suback.mid == 12
    assert [code.value for code in decoded_suback.reason_codes] == [0, 1, 2, 0x8F, 0xA2]
    packet = m.unsuback(13, [0, m.NO_SUBSCRIPTION_EXISTED, m.NOT_AUTHORIZED])
    decoded_unsuback = paho_packet.decode_unsuback(packet[0], _split(packet)[2], MQTT5)
    assert decoded_unsuback.mid == 13
    assert [code.value for code in decoded_unsuback.reason_codes] == [0, 0x11, 0x87]
    packet = m.disconnect(m.USE_ANOTHER_SERVER, "go away")
    decoded = paho_packet.decode_disconnect(packet[0], _split(packet)[2], MQTT5)
    assert decoded.reason is not None
    assert decoded.reason.value == 0x9C
    assert decoded.properties is not None
    assert decoded.properties.ReasonString == "go away"
    empty = paho_packet.decode_disconnect(0xE0, _split(m.disconnect())[2], MQTT5)
    assert empty.reason is None


# --- paho's property blocks through our parsers; the allowed-property table ------------------

SAMPLE_VALUES: dict[int, tuple[bytes, Any]] = {
    # property id: (encoded value, decoded value)
    m.PAYLOAD_FORMAT_INDICATOR: (b"\x01", 1),
    m.MESSAGE_EXPIRY_INTERVAL: (b"\x00\x01\x00\x00", 65536),
    m.CONTENT_TYPE: (_s("text/plain"), "text/plain"),
    m.RESPONSE_TOPIC: (_s("r/t"), "r/t"),
    m.CORRELATION_DATA: (_bin(b"\x00\x01"), b"\x00\x01"),
    m.SUBSCRIPTION_IDENTIFIER: (b"\x80\x01", 128),
    m.SESSION_EXPIRY_INTERVAL: (b"\x00\x00\x0e\x10", 3600),
    m.ASSIGNED_CLIENT_IDENTIFIER: (_s("id"), "id"),
    m.SERVER_KEEP_ALIVE: (b"\x00\x1e", 30),
    m.AUTHENTICATION_METHOD: (_s("PLAIN"), "PLAIN"),
    m.AUTHENTICATION_DATA: (_bin(b"\xff"), b"\xff"),
    m.REQUEST_PROBLEM_INFORMATION: (b"\x00", 0),
    m.WILL_DELAY_INTERVAL: (b"\x00\x00\x00\x05", 5),
    m.REQUEST_RESPONSE_INFORMATION: (b"\x01", 1),
    m.RESPONSE_INFORMATION: (_s("ri"), "ri"),
    m.SERVER_REFERENCE: (_s("host"), "host"),
    m.REASON_STRING: (_s("why"), "why"),
    m.RECEIVE_MAXIMUM: (b"\x00\x05", 5),
    m.TOPIC_ALIAS_MAXIMUM: (b"\x00\x00", 0),
    m.TOPIC_ALIAS: (b"\x00\x03", 3),
    m.MAXIMUM_QOS: (b"\x00", 0),
    m.RETAIN_AVAILABLE: (b"\x01", 1),
    m.USER_PROPERTY: (_s("n") + _s("v"), [("n", "v")]),
    m.MAXIMUM_PACKET_SIZE: (b"\x00\x00\x10\x00", 4096),
    m.WILDCARD_SUBSCRIPTION_AVAILABLE: (b"\x00", 0),
    m.SUBSCRIPTION_IDENTIFIER_AVAILABLE: (b"\x01", 1),
    m.SHARED_SUBSCRIPTION_AVAILABLE: (b"\x00", 0),
}


def _will_properties(connect: m.Connect) -> m.Properties:
    assert connect.will is not None
    return connect.will.properties


# How each parser sees a property block, and the paho packet type of the same table column.
PARSERS: dict[str, tuple[int, Callable[[bytes], m.Properties]]] = {
    "CONNECT": (PacketTypes.CONNECT, lambda p: m.parse_connect(_connect(properties=p)).properties),
    "will": (
        PacketTypes.WILLMESSAGE,
        lambda p: _will_properties(m.parse_connect(_will_connect(will_properties=p))),
    ),
    "PUBLISH": (PacketTypes.PUBLISH, lambda p: m.parse_publish(0, _s("t") + p + b"x").properties),
    "PUBACK": (PacketTypes.PUBACK, lambda p: m.parse_ack(b"\x00\x01\x00" + p).properties),
    "SUBSCRIBE": (
        PacketTypes.SUBSCRIBE,
        lambda p: m.parse_subscribe(2, b"\x00\x01" + p + _s("t") + b"\x01").properties,
    ),
    "UNSUBSCRIBE": (
        PacketTypes.UNSUBSCRIBE,
        lambda p: m.parse_unsubscribe(2, b"\x00\x01" + p + _s("t")).properties,
    ),
    "DISCONNECT": (PacketTypes.DISCONNECT, lambda p: m.parse_disconnect(b"\x00" + p).properties),
}


@pytest.mark.parametrize("ident", sorted(SAMPLE_VALUES))
@pytest.mark.parametrize("packet", sorted(PARSERS))
def test_parsers_allow_exactly_the_properties_paho_allows(ident: int, packet: str) -> None:
    """The allowed-property table of every parser, cross-checked against paho's own."""
    paho_type, parse = PARSERS[packet]
    encoded, value = SAMPLE_VALUES[ident]
    block = [bytes([ident]) + encoded]
    expected = {ident: value}
    if ident == m.AUTHENTICATION_DATA and packet == "CONNECT":
        block.insert(0, b"\x15" + _s("PLAIN"))  # data without a method is a Protocol Error
        expected = {m.AUTHENTICATION_METHOD: "PLAIN", ident: value}
    paho_allows = paho_type in PahoProperties(paho_type).properties[ident][1]
    if packet == "PUBLISH" and ident == m.SUBSCRIPTION_IDENTIFIER:
        # Allowed in PUBLISH, but one from a client must not carry it [MQTT-3.3.4-6].
        assert paho_allows
        with pytest.raises(ProtocolError, match="must not carry") as caught:
            parse(_props(*block))
        assert caught.value.reason == m.PROTOCOL_ERROR
    elif paho_allows:
        assert parse(_props(*block)) == expected
    else:
        with pytest.raises(ProtocolError, match="not allowed in") as caught:
            parse(_props(*block))
        assert caught.value.reason == m.MALFORMED_PACKET


@pytest.mark.parametrize("ident", sorted(SAMPLE_VALUES))
def test_connack_and_publish_encoders_allow_exactly_what_paho_allows(ident: int) -> None:
    value = SAMPLE_VALUES[ident][1]
    for paho_type, encode in [
        (PacketTypes.CONNACK, lambda props: m.connack(False, 0, props)),
        (PacketTypes.PUBLISH, lambda props: m.publish("t", b"", properties=props)),
    ]:
        packet_properties = {ident: value}
        if paho_type in PahoProperties(paho_type).properties[ident][1]:
            packet = encode(packet_properties)
            decoded = (
                paho_packet.decode_connack(packet[0], _split(packet)[2], MQTT5).properties
                if paho_type == PacketTypes.CONNACK
                else paho_packet.decode_publish(packet[0], _split(packet)[2], MQTT5).properties
            )
            assert decoded is not None
            expected = [value] if ident == m.SUBSCRIPTION_IDENTIFIER else value
            assert getattr(decoded, PAHO_NAMES[ident]) == expected
        else:
            with pytest.raises(ValueError, match="not allowed in"):
                encode(packet_properties)


def _paho_properties(packet_type: int, **values: Any) -> PahoProperties:
    properties = PahoProperties(packet_type)
    for name, value in values.items():
        for item in value if name == "UserProperty" else [value]:
            setattr(properties, name, item)
    return properties


def test_we_parse_paho_property_blocks() -> None:
    connect = _paho_properties(
        PacketTypes.CONNECT,
        SessionExpiryInterval=120,
        ReceiveMaximum=16,
        MaximumPacketSize=2048,
        TopicAliasMaximum=3,
        RequestResponseInformation=1,
        RequestProblemInformation=0,
        AuthenticationMethod="TOKEN",
        AuthenticationData=b"\x00\x01",
        UserProperty=[("a", "1"), ("b", "\u00fc")],
    )
    will = _paho_properties(
        PacketTypes.WILLMESSAGE,
        WillDelayInterval=9,
        PayloadFormatIndicator=1,
        MessageExpiryInterval=99,
        ContentType="text/plain",
        ResponseTopic="r",
        CorrelationData=b"c",
        UserProperty=[("w", "x")],
    )
    parsed = m.parse_connect(_will_connect(properties=connect.pack(), will_properties=will.pack()))
    assert parsed.properties == _paho_to_dict(connect)
    assert parsed.will is not None
    assert parsed.will.properties == _paho_to_dict(will)

    publish = _paho_properties(
        PacketTypes.PUBLISH,
        PayloadFormatIndicator=0,
        MessageExpiryInterval=1,
        ContentType="c",
        ResponseTopic="a/b",
        CorrelationData=b"",
        TopicAlias=65535,
        UserProperty=[("k", "v"), ("k", "v")],
    )
    assert m.parse_publish(0, _s("t") + publish.pack() + b"p").properties == _paho_to_dict(publish)
    subscribe = _paho_properties(
        PacketTypes.SUBSCRIBE, SubscriptionIdentifier=268_435_455, UserProperty=[("s", "1")]
    )
    parsed_subscribe = m.parse_subscribe(2, b"\x00\x01" + subscribe.pack() + _s("t") + b"\x00")
    assert parsed_subscribe.properties == {
        m.SUBSCRIPTION_IDENTIFIER: 268_435_455,
        m.USER_PROPERTY: [("s", "1")],
    }
    for packet_type, parse in [
        (PacketTypes.PUBACK, lambda p: m.parse_ack(b"\x00\x01\x80" + p).properties),
        (PacketTypes.DISCONNECT, lambda p: m.parse_disconnect(b"\x80" + p).properties),
        (
            PacketTypes.UNSUBSCRIBE,
            lambda p: m.parse_unsubscribe(2, b"\x00\x01" + p + _s("t")).properties,
        ),
    ]:
        values: dict[str, Any] = {"UserProperty": [("u", "1"), ("u", "2")]}
        if packet_type != PacketTypes.UNSUBSCRIBE:
            values["ReasonString"] = "because"
        properties = _paho_properties(packet_type, **values)
        assert parse(properties.pack()) == _paho_to_dict(properties)


# --- Refusals: every ProtocolError the codec raises --------------------------------------------

_WILL_PFI_UTF8 = _props(b"\x01\x01")
_SUB = b"\x00\x01" + NO_PROPS  # SUBSCRIBE/UNSUBSCRIBE packet identifier 1, no properties

MALFORMED_CASES: list[tuple[str, Callable[[], object], int, str]] = [
    # protocol name and level
    ("short CONNECT", lambda: m.protocol_level(b"\x00\x04MQT"), 0x81, "too short"),
    ("MQIsdp", lambda: m.protocol_level(b"\x00\x06MQIsdp\x03\x02\x00"), 0x81, "not MQTT"),
    (
        "lower-case name",
        lambda: m.parse_connect(b"\x00\x04mqtt\x05\x02\x00\x00\x00"),
        0x81,
        "not MQTT",
    ),
    ("MQTT 3.1.1", lambda: m.parse_connect(_connect(level=4)), 0x84, "level 4 is not 5"),
    ("level 6", lambda: m.parse_connect(_connect(level=6)), 0x84, "level 6 is not 5"),
    # CONNECT variable header
    (
        "no connect flags",
        lambda: m.parse_connect(b"\x00\x04MQTT\x05"),
        0x81,
        "connect flags is truncated",
    ),
    ("reserved flag", lambda: m.parse_connect(_connect(flags=0x03)), 0x81, "reserved connect flag"),
    ("will QoS 3", lambda: m.parse_connect(_will_connect(flags=0x1E)), 0x81, "will QoS 3"),
    (
        "will QoS sans will",
        lambda: m.parse_connect(_connect(flags=0x0A)),
        0x82,
        "without the will flag",
    ),
    (
        "will retain sans will",
        lambda: m.parse_connect(_connect(flags=0x22)),
        0x82,
        "without the will flag",
    ),
    (
        "keep alive cut",
        lambda: m.parse_connect(b"\x00\x04MQTT\x05\x02\x00"),
        0x81,
        "keep alive is truncated",
    ),
    (
        "CONNECT without properties",
        lambda: m.parse_connect(_connect(properties=b"", payload=b"")),
        0x81,
        "property length is truncated",
    ),
    (
        "bad property length",
        lambda: m.parse_connect(_connect(properties=b"\x80\x00", payload=b"")),
        0x81,
        "not minimally encoded",
    ),
    (
        "5-byte property length",
        lambda: m.parse_connect(_connect(properties=b"\xff\xff\xff\xff\x01")),
        0x81,
        "longer than four bytes",
    ),
    (
        "property length too big",
        lambda: m.parse_connect(_connect(properties=b"\x09\x11\x00\x00\x00\x01", payload=b"")),
        0x81,
        "exceeds the 5 bytes left",
    ),
    (
        "unknown property",
        lambda: m.parse_connect(_connect(properties=_props(b"\x7f\x00"))),
        0x81,
        "unknown property identifier 0x7F",
    ),
    (
        "property id 0",
        lambda: m.parse_connect(_connect(properties=_props(b"\x00\x00"))),
        0x81,
        "unknown property identifier 0x00",
    ),
    (
        "non-minimal property id",
        lambda: m.parse_connect(_connect(properties=_props(b"\x91\x00\x00\x00\x00\x00"))),
        0x81,
        "property identifier is not minimally encoded",
    ),
    (
        "Topic Alias in CONNECT",
        lambda: m.parse_connect(_connect(properties=_props(b"\x23\x00\x01"))),
        0x81,
        "Topic Alias is not allowed in CONNECT",
    ),
    (
        "Will Delay in CONNECT",
        lambda: m.parse_connect(_connect(properties=_props(b"\x18\x00\x00\x00\x01"))),
        0x81,
        "Will Delay Interval is not allowed in CONNECT",
    ),
    (
        "value past property length",
        lambda: m.parse_connect(_connect(properties=_props(b"\x11\x00\x00"), payload=_s("c"))),
        0x81,
        "Session Expiry Interval is truncated",
    ),
    (
        "string past property length",
        lambda: m.parse_connect(
            _connect(properties=_props(b"\x15\x00\x09PL"), payload=_s("client-id"))
        ),
        0x81,
        "Authentication Method is truncated",
    ),
    (
        "Session Expiry twice",
        lambda: m.parse_connect(
            _connect(properties=_props(b"\x11\x00\x00\x00\x01", b"\x11\x00\x00\x00\x02"))
        ),
        0x82,
        "Session Expiry Interval appears more than once in CONNECT",
    ),
    (
        "Receive Maximum twice",
        lambda: m.parse_connect(_connect(properties=_props(b"\x21\x00\x01", b"\x21\x00\x01"))),
        0x82,
        "more than once",
    ),
    (
        "Receive Maximum 0",
        lambda: m.parse_connect(_connect(properties=_props(b"\x21\x00\x00"))),
        0x82,
        "Receive Maximum must not be 0",
    ),
    (
        "Maximum Packet Size 0",
        lambda: m.parse_connect(_connect(properties=_props(b"\x27\x00\x00\x00\x00"))),
        0x82,
        "Maximum Packet Size must not be 0",
    ),
    (
        "Request Problem Information 2",
        lambda: m.parse_connect(_connect(properties=_props(b"\x17\x02"))),
        0x82,
        "must be 0 or 1, not 2",
    ),
    (
        "Request Response Information 9",
        lambda: m.parse_connect(_connect(properties=_props(b"\x19\x09"))),
        0x82,
        "must be 0 or 1, not 9",
    ),
    (
        "auth data sans method",
        lambda: m.parse_connect(_connect(properties=_props(b"\x16" + _bin(b"x")))),
        0x82,
        "without an Authentication Method",
    ),
    (
        "user property name bad UTF-8",
        lambda: m.parse_connect(_connect(properties=_props(b"\x26" + _bin(b"\xc3") + _s("v")))),
        0x81,
        "User Property name is not well-formed UTF-8",
    ),
    (
        "user property value NUL",
        lambda: m.parse_connect(_connect(properties=_props(b"\x26" + _s("n") + _bin(b"a\x00")))),
        0x81,
        "User Property value contains U+0000",
    ),
    # CONNECT payload
    (
        "no client id",
        lambda: m.parse_connect(_connect(payload=b"")),
        0x81,
        "client identifier is truncated",
    ),
    (
        "client id cut",
        lambda: m.parse_connect(_connect(payload=b"\x00\x05ab")),
        0x81,
        "client identifier is truncated",
    ),
    (
        "client id bad UTF-8",
        lambda: m.parse_connect(_connect(payload=_bin(b"\xff"))),
        0x81,
        "not well-formed UTF-8",
    ),
    (
        "client id surrogate",
        lambda: m.parse_connect(_connect(payload=_bin(b"\xed\xa0\x80"))),
        0x81,
        "not well-formed UTF-8",
    ),
    (
        "client id overlong",
        lambda: m.parse_connect(_connect(payload=_bin(b"\xc0\xaf"))),
        0x81,
        "not well-formed UTF-8",
    ),
    (
        "client id NUL",
        lambda: m.parse_connect(_connect(payload=_bin(b"a\x00b"))),
        0x81,
        "client identifier contains U+0000",
    ),
    (
        "trailing bytes",
        lambda: m.parse_connect(_connect(payload=_s("c") + b"\x00")),
        0x81,
        "1 unexpected bytes after the CONNECT payload",
    ),
    (
        "missing user name",
        lambda: m.parse_connect(_connect(flags=0x82)),
        0x81,
        "user name is truncated",
    ),
    (
        "missing password",
        lambda: m.parse_connect(_connect(flags=0x42)),
        0x81,
        "password is truncated",
    ),
    (
        "missing will",
        lambda: m.parse_connect(_connect(flags=0x06)),
        0x81,
        "will properties property length is truncated",
    ),
    (
        "Session Expiry in will",
        lambda: m.parse_connect(_will_connect(will_properties=_props(b"\x11\x00\x00\x00\x01"))),
        0x81,
        "Session Expiry Interval is not allowed in will properties",
    ),
    (
        "Will Delay twice",
        lambda: m.parse_connect(_will_connect(will_properties=_props(b"\x18\x00\x00\x00\x01" * 2))),
        0x82,
        "Will Delay Interval appears more than once in will properties",
    ),
    (
        "will Payload Format 2",
        lambda: m.parse_connect(_will_connect(will_properties=_props(b"\x01\x02"))),
        0x82,
        "Payload Format Indicator must be 0 or 1",
    ),
    (
        "will Response Topic wildcard",
        lambda: m.parse_connect(_will_connect(will_properties=_props(b"\x08" + _s("r/#")))),
        0x82,
        "Response Topic 'r/#' contains a wildcard",
    ),
    (
        "will topic cut",
        lambda: m.parse_connect(_will_connect(topic=b"\x00\x09w")),
        0x81,
        "will topic is truncated",
    ),
    (
        "empty will topic",
        lambda: m.parse_connect(_will_connect(topic=_s(""))),
        0x82,
        "empty will topic",
    ),
    (
        "will topic +",
        lambda: m.parse_connect(_will_connect(topic=_s("a/+/c"))),
        0x82,
        "will topic 'a/+/c' contains a wildcard",
    ),
    (
        "will topic #",
        lambda: m.parse_connect(_will_connect(topic=_s("#"))),
        0x82,
        "contains a wildcard",
    ),
    (
        "will payload cut",
        lambda: m.parse_connect(_will_connect(payload=b"\x00\x05ab")),
        0x81,
        "will payload is truncated",
    ),
    (
        "will not UTF-8",
        lambda: m.parse_connect(
            _will_connect(will_properties=_WILL_PFI_UTF8, payload=_bin(b"\xfe\xff"))
        ),
        0x99,
        "marked UTF-8 but is not",
    ),
    # PUBLISH
    (
        "PUBLISH QoS 3",
        lambda: m.parse_publish(0b0110, _s("t") + b"\x00\x01" + NO_PROPS),
        0x81,
        "QoS 3",
    ),
    (
        "DUP on QoS 0",
        lambda: m.parse_publish(0b1000, _s("t") + NO_PROPS),
        0x82,
        "DUP flag set on a QoS 0",
    ),
    (
        "packet id 0",
        lambda: m.parse_publish(0b0010, _s("t") + b"\x00\x00" + NO_PROPS),
        0x82,
        "PUBLISH packet identifier must not be 0",
    ),
    (
        "packet id cut",
        lambda: m.parse_publish(0b0100, _s("t") + b"\x01"),
        0x81,
        "PUBLISH packet identifier is truncated",
    ),
    ("topic cut", lambda: m.parse_publish(0, b"\x00\x05t"), 0x81, "topic name is truncated"),
    ("empty body", lambda: m.parse_publish(0, b""), 0x81, "topic name is truncated"),
    (
        "topic bad UTF-8",
        lambda: m.parse_publish(0, _bin(b"a\x80") + NO_PROPS),
        0x81,
        "topic name is not well-formed UTF-8",
    ),
    (
        "topic NUL",
        lambda: m.parse_publish(0, _bin(b"a\x00") + NO_PROPS),
        0x81,
        "topic name contains U+0000",
    ),
    (
        "PUBLISH without properties",
        lambda: m.parse_publish(0, _s("t")),
        0x81,
        "PUBLISH property length is truncated",
    ),
    (
        "topic with +",
        lambda: m.parse_publish(0, _s("a/+") + NO_PROPS),
        0x82,
        "PUBLISH topic 'a/+' contains a wildcard",
    ),
    (
        "topic with #",
        lambda: m.parse_publish(0b0010, _s("a/#") + b"\x00\x01" + NO_PROPS),
        0x82,
        "contains a wildcard",
    ),
    (
        "empty topic, no alias",
        lambda: m.parse_publish(0, _s("") + NO_PROPS + b"x"),
        0x82,
        "empty topic and no Topic Alias",
    ),
    (
        "Topic Alias 0",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x23\x00\x00")),
        0x94,
        "Topic Alias must not be 0",
    ),
    (
        "Topic Alias twice",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x23\x00\x01", b"\x23\x00\x02")),
        0x82,
        "Topic Alias appears more than once in PUBLISH",
    ),
    (
        "Subscription Identifier",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x0b\x01")),
        0x82,
        "must not carry a Subscription Identifier",
    ),
    (
        "Payload Format 2",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x01\x02")),
        0x82,
        "must be 0 or 1, not 2",
    ),
    (
        "Content Type twice",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x03" + _s("a"), b"\x03" + _s("b"))),
        0x82,
        "Content Type appears more than once",
    ),
    (
        "Response Topic wildcard",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x08" + _s("r/+"))),
        0x82,
        "Response Topic 'r/+' contains a wildcard",
    ),
    (
        "Reason String in PUBLISH",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x1f" + _s("r"))),
        0x81,
        "Reason String is not allowed in PUBLISH",
    ),
    (
        "Correlation Data cut",
        lambda: m.parse_publish(0, _s("t") + _props(b"\x09\x00\x04ab")),
        0x81,
        "Correlation Data is truncated",
    ),
    # PUBACK, PUBREC, PUBREL, PUBCOMP
    ("ack empty", lambda: m.parse_ack(b""), 0x81, "acknowledgement packet identifier is truncated"),
    ("ack 1 byte", lambda: m.parse_ack(b"\x00"), 0x81, "truncated"),
    (
        "ack packet id 0",
        lambda: m.parse_ack(b"\x00\x00"),
        0x82,
        "acknowledgement packet identifier must not be 0",
    ),
    (
        "ack trailing",
        lambda: m.parse_ack(b"\x00\x01\x00\x00\xff"),
        0x81,
        "1 unexpected bytes after the acknowledgement properties",
    ),
    (
        "ack property length too big",
        lambda: m.parse_ack(b"\x00\x01\x00\x04\x1f\x00"),
        0x81,
        "exceeds the 2 bytes left",
    ),
    (
        "Receive Maximum in ack",
        lambda: m.parse_ack(b"\x00\x01\x10" + _props(b"\x21\x00\x01")),
        0x81,
        "Receive Maximum is not allowed in PUBACK/PUBREC/PUBREL/PUBCOMP",
    ),
    (
        "Reason String twice in ack",
        lambda: m.parse_ack(b"\x00\x01\x80" + _props(b"\x1f" + _s("a"), b"\x1f" + _s("b"))),
        0x82,
        "Reason String appears more than once",
    ),
    # SUBSCRIBE
    (
        "SUBSCRIBE flags 0000",
        lambda: m.parse_subscribe(0, _SUB + _s("t") + b"\x00"),
        0x81,
        "SUBSCRIBE fixed header flags must be 0010, not 0000",
    ),
    (
        "SUBSCRIBE flags 0011",
        lambda: m.parse_subscribe(3, _SUB + _s("t") + b"\x00"),
        0x81,
        "not 0011",
    ),
    (
        "SUBSCRIBE packet id 0",
        lambda: m.parse_subscribe(2, b"\x00\x00\x00" + _s("t") + b"\x00"),
        0x82,
        "SUBSCRIBE packet identifier must not be 0",
    ),
    (
        "SUBSCRIBE empty",
        lambda: m.parse_subscribe(2, b""),
        0x81,
        "SUBSCRIBE packet identifier is truncated",
    ),
    (
        "SUBSCRIBE no filters",
        lambda: m.parse_subscribe(2, _SUB),
        0x82,
        "SUBSCRIBE without any topic filter",
    ),
    (
        "SUBSCRIBE no options",
        lambda: m.parse_subscribe(2, _SUB + _s("t")),
        0x81,
        "subscription options is truncated",
    ),
    (
        "SUBSCRIBE filter cut",
        lambda: m.parse_subscribe(2, _SUB + b"\x00\x04ab"),
        0x81,
        "topic filter is truncated",
    ),
    (
        "SUBSCRIBE filter bad UTF-8",
        lambda: m.parse_subscribe(2, _SUB + _bin(b"\xf8") + b"\x00"),
        0x81,
        "topic filter is not well-formed UTF-8",
    ),
    (
        "reserved option bit 6",
        lambda: m.parse_subscribe(2, _SUB + _s("t") + b"\x40"),
        0x81,
        "reserved subscription option bits",
    ),
    (
        "reserved option bit 7",
        lambda: m.parse_subscribe(2, _SUB + _s("t") + b"\x81"),
        0x81,
        "reserved subscription option bits",
    ),
    (
        "subscription QoS 3",
        lambda: m.parse_subscribe(2, _SUB + _s("t") + b"\x03"),
        0x82,
        "asks for QoS 3",
    ),
    (
        "Retain Handling 3",
        lambda: m.parse_subscribe(2, _SUB + _s("t") + b"\x30"),
        0x82,
        "Retain Handling 3",
    ),
    (
        "second request bad",
        lambda: m.parse_subscribe(2, _SUB + _s("a") + b"\x01" + _s("b") + b"\x33"),
        0x82,
        "QoS 3",
    ),
    (
        "No Local on shared",
        lambda: m.parse_subscribe(2, _SUB + _s("$share/g/t") + b"\x04"),
        0x82,
        "No Local on the shared subscription",
    ),
    (
        "Subscription Identifier 0",
        lambda: m.parse_subscribe(2, b"\x00\x01" + _props(b"\x0b\x00") + _s("t") + b"\x00"),
        0x82,
        "Subscription Identifier must not be 0",
    ),
    (
        "Subscription Identifier twice",
        lambda: m.parse_subscribe(
            2, b"\x00\x01" + _props(b"\x0b\x01", b"\x0b\x02") + _s("t") + b"\x00"
        ),
        0x82,
        "Subscription Identifier appears more than once in SUBSCRIBE",
    ),
    (
        "Subscription Identifier 5 bytes",
        lambda: m.parse_subscribe(
            2, b"\x00\x01" + _props(b"\x0b\x80\x80\x80\x80\x01") + _s("t") + b"\x00"
        ),
        0x81,
        "Subscription Identifier is longer than four bytes",
    ),
    (
        "Subscription Identifier cut",
        lambda: m.parse_subscribe(2, b"\x00\x01" + _props(b"\x0b\x80") + _s("t") + b"\x00"),
        0x81,
        "Subscription Identifier is truncated",
    ),
    (
        "Topic Alias in SUBSCRIBE",
        lambda: m.parse_subscribe(2, b"\x00\x01" + _props(b"\x23\x00\x01") + _s("t") + b"\x00"),
        0x81,
        "Topic Alias is not allowed in SUBSCRIBE",
    ),
    # UNSUBSCRIBE
    (
        "UNSUBSCRIBE flags 0000",
        lambda: m.parse_unsubscribe(0, _SUB + _s("t")),
        0x81,
        "UNSUBSCRIBE fixed header flags must be 0010",
    ),
    (
        "UNSUBSCRIBE packet id 0",
        lambda: m.parse_unsubscribe(2, b"\x00\x00\x00" + _s("t")),
        0x82,
        "UNSUBSCRIBE packet identifier must not be 0",
    ),
    (
        "UNSUBSCRIBE no filters",
        lambda: m.parse_unsubscribe(2, _SUB),
        0x82,
        "UNSUBSCRIBE without any topic filter",
    ),
    (
        "UNSUBSCRIBE filter cut",
        lambda: m.parse_unsubscribe(2, _SUB + b"\x00\x03a"),
        0x81,
        "topic filter is truncated",
    ),
    (
        "UNSUBSCRIBE filter NUL",
        lambda: m.parse_unsubscribe(2, _SUB + _bin(b"\x00")),
        0x81,
        "topic filter contains U+0000",
    ),
    (
        "UNSUBSCRIBE Reason String",
        lambda: m.parse_unsubscribe(2, b"\x00\x01" + _props(b"\x1f" + _s("r")) + _s("t")),
        0x81,
        "Reason String is not allowed in UNSUBSCRIBE",
    ),
    # DISCONNECT
    (
        "DISCONNECT trailing",
        lambda: m.parse_disconnect(b"\x00\x00\x00"),
        0x81,
        "1 unexpected bytes after the DISCONNECT properties",
    ),
    (
        "DISCONNECT property length too big",
        lambda: m.parse_disconnect(b"\x04\x05"),
        0x81,
        "exceeds the 0 bytes left",
    ),
    (
        "Receive Maximum in DISCONNECT",
        lambda: m.parse_disconnect(b"\x00" + _props(b"\x21\x00\x01")),
        0x81,
        "Receive Maximum is not allowed in DISCONNECT",
    ),
    (
        "Session Expiry twice in DISCONNECT",
        lambda: m.parse_disconnect(b"\x00" + _props(b"\x11\x00\x00\x00\x00" * 2)),
        0x82,
        "appears more than once in DISCONNECT",
    ),
    (
        "Reason String NUL in DISCONNECT",
        lambda: m.parse_disconnect(b"\x00" + _props(b"\x1f" + _bin(b"\x00"))),
        0x81,
        "Reason String contains U+0000",
    ),
    # fixed header flags
    ("packet type 0", lambda: m.check_flags(0, 0), 0x81, "packet type 0 is reserved"),
    (
        "fixed header QoS 3",
        lambda: m.check_flags(PacketType.PUBLISH, 0b0111),
        0x81,
        "PUBLISH with QoS 3",
    ),
    (
        "PUBREL flags 0000",
        lambda: m.check_flags(PacketType.PUBREL, 0),
        0x81,
        "PUBREL fixed header flags must be 0010, not 0000",
    ),
    (
        "SUBSCRIBE flags 0000 header",
        lambda: m.check_flags(PacketType.SUBSCRIBE, 0),
        0x81,
        "SUBSCRIBE fixed header flags",
    ),
    (
        "UNSUBSCRIBE flags 0011 header",
        lambda: m.check_flags(PacketType.UNSUBSCRIBE, 3),
        0x81,
        "UNSUBSCRIBE fixed header flags",
    ),
    (
        "PUBACK flags 0010",
        lambda: m.check_flags(PacketType.PUBACK, 2),
        0x81,
        "PUBACK fixed header flags must be 0000, not 0010",
    ),
    (
        "CONNECT flags 0001",
        lambda: m.check_flags(PacketType.CONNECT, 1),
        0x81,
        "CONNECT fixed header flags",
    ),
    (
        "PINGREQ flags 1000",
        lambda: m.check_flags(PacketType.PINGREQ, 8),
        0x81,
        "PINGREQ fixed header flags",
    ),
    (
        "DISCONNECT flags 0001",
        lambda: m.check_flags(PacketType.DISCONNECT, 1),
        0x81,
        "DISCONNECT fixed header flags",
    ),
]


@pytest.mark.parametrize(
    ("call", "reason", "message"),
    [
        pytest.param(call, reason, message, id=name)
        for name, call, reason, message in MALFORMED_CASES
    ],
)
def test_refusals(call: Callable[[], object], reason: int, message: str) -> None:
    with pytest.raises(ProtocolError, match=re.escape(message)) as caught:
        call()
    assert caught.value.reason == reason
    # The broker can always answer with the reason: a CONNACK while connecting, else a
    # DISCONNECT (both encoders refuse reason codes their packet does not allow).
    if {"parse_connect", "protocol_level"} & set(call.__code__.co_names):
        assert m.connack(False, reason)[3] == reason
    else:
        assert m.disconnect(reason)[2] == reason


def test_refusal_cases_are_distinct_inputs() -> None:
    names = [name for name, *_ in MALFORMED_CASES]
    assert len(names) == len(set(names))


@pytest.mark.parametrize(
    ("call", "message"),
    [
        pytest.param(lambda: m.parse_publish(16, b""), "low four bits", id="publish flags"),
        pytest.param(lambda: m.check_flags(3, -1), "low four bits", id="check flags"),
        pytest.param(
            lambda: m.connack(False, m.NO_MATCHING_SUBSCRIBERS),
            "not a CONNACK reason",
            id="connack reason",
        ),
        pytest.param(
            lambda: m.connack(False, m.SERVER_SHUTTING_DOWN),
            "not a CONNACK reason",
            id="disconnect-only reason",
        ),
        pytest.param(
            lambda: m.connack(True, m.NOT_AUTHORIZED),
            "Session Present must be 0",
            id="present on refusal",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.TOPIC_ALIAS: 1}),
            "Topic Alias is not allowed in CONNACK",
            id="connack topic alias",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {0x7F: 1}),
            "unknown property identifier",
            id="unknown property",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.MAXIMUM_QOS: 2}),
            "Maximum QoS must be 0 or 1",
            id="maximum qos 2",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.RECEIVE_MAXIMUM: 0}),
            "Receive Maximum must not be 0",
            id="receive maximum 0",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.RECEIVE_MAXIMUM: 70_000}),
            "from 0 to 65535",
            id="u16 range",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.SESSION_EXPIRY_INTERVAL: -1}),
            "from 0 to 4294967295",
            id="u32 range",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.RETAIN_AVAILABLE: True}),
            "must be an int",
            id="bool value",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.SERVER_KEEP_ALIVE: "30"}),
            "must be an int",
            id="str for int",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.REASON_STRING: b"x"}),
            "Reason String must be a str",
            id="bytes for str",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.AUTHENTICATION_DATA: "x"}),
            "Authentication Data must be bytes",
            id="str for bytes",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.USER_PROPERTY: ("a", "b")}),
            "must be a list",
            id="user property not a list",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.USER_PROPERTY: [("a", "b", "c")]}),
            "pair",
            id="user property triple",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.USER_PROPERTY: ["ab"]}), "pair", id="user property str"
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.REASON_STRING: "a\x00b"}),
            "contains U+0000",
            id="nul in string",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.REASON_STRING: "\ud800"}),
            "not encodable",
            id="lone surrogate",
        ),
        pytest.param(
            lambda: m.connack(False, 0, {m.REASON_STRING: "x" * 65_536}),
            "longer than 65,535",
            id="long string",
        ),
        pytest.param(
            lambda: m.publish("t", b"", properties={m.RESPONSE_TOPIC: "a/#"}),
            "contains a wildcard",
            id="response topic",
        ),
        pytest.param(
            lambda: m.publish("t", b"", properties={m.TOPIC_ALIAS: 0}),
            "Topic Alias must not be 0",
            id="topic alias 0",
        ),
        pytest.param(
            lambda: m.publish("t", b"", properties={m.SUBSCRIPTION_IDENTIFIER: [1, 0]}),
            "must not be 0",
            id="subscription id 0",
        ),
        pytest.param(
            lambda: m.publish("t", b"", properties={m.SUBSCRIPTION_IDENTIFIER: m.MAX_VARINT + 1}),
            "from 0 to 268435455",
            id="subscription id too big",
        ),
        pytest.param(
            lambda: m.publish("t", b"", qos=3, packet_id=1), "QoS must be 0, 1 or 2", id="qos 3"
        ),
        pytest.param(lambda: m.publish("a/+", b""), "contains a wildcard", id="wildcard topic"),
        pytest.param(lambda: m.publish("", b""), "needs a Topic Alias", id="empty topic"),
        pytest.param(
            lambda: m.publish("t", b"", packet_id=1),
            "QoS 0 PUBLISH has no packet identifier",
            id="qos 0 with id",
        ),
        pytest.param(lambda: m.publish("t", b"", dup=True), "no DUP flag", id="qos 0 dup"),
        pytest.param(
            lambda: m.publish("t", b"", qos=1), "needs a packet identifier", id="qos 1 without id"
        ),
        pytest.param(
            lambda: m.publish("t", b"", qos=1, packet_id=0), "1 to 65535", id="packet id 0"
        ),
        pytest.param(
            lambda: m.publish("t", b"", qos=2, packet_id=65_536),
            "1 to 65535",
            id="packet id too big",
        ),
        pytest.param(
            lambda: m.publish("t", b"", qos=1, packet_id=True), "1 to 65535", id="packet id bool"
        ),
        pytest.param(lambda: m.publish("t\x00", b""), "contains U+0000", id="nul topic"),
        pytest.param(lambda: m.puback(0), "1 to 65535", id="puback id 0"),
        pytest.param(
            lambda: m.puback(1, m.PACKET_IDENTIFIER_NOT_FOUND),
            "not a PUBACK reason",
            id="puback reason",
        ),
        pytest.param(
            lambda: m.pubrec(1, m.PACKET_IDENTIFIER_NOT_FOUND),
            "not a PUBREC reason",
            id="pubrec reason",
        ),
        pytest.param(
            lambda: m.pubrel(1, m.NO_MATCHING_SUBSCRIBERS),
            "not a PUBREL reason",
            id="pubrel reason",
        ),
        pytest.param(
            lambda: m.pubcomp(1, m.UNSPECIFIED_ERROR), "not a PUBCOMP reason", id="pubcomp reason"
        ),
        pytest.param(
            lambda: m.suback(1, []), "one reason code per topic filter", id="suback empty"
        ),
        pytest.param(lambda: m.suback(1, [3]), "not a SUBACK reason", id="suback qos 3"),
        pytest.param(lambda: m.suback(0, [1]), "1 to 65535", id="suback id 0"),
        pytest.param(
            lambda: m.unsuback(1, [m.GRANTED_QOS_1]), "not a UNSUBACK reason", id="unsuback reason"
        ),
        pytest.param(lambda: m.unsuback(1, []), "one reason code", id="unsuback empty"),
        pytest.param(
            lambda: m.disconnect(m.DISCONNECT_WITH_WILL_MESSAGE),
            "not a server DISCONNECT reason",
            id="client-only reason",
        ),
        pytest.param(
            lambda: m.disconnect(m.UNSUPPORTED_PROTOCOL_VERSION),
            "not a server DISCONNECT reason",
            id="connack-only reason",
        ),
    ],
)
def test_encoders_refuse_invalid_arguments(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as caught:
        call()
    assert not isinstance(caught.value, ProtocolError)


def test_encoders_refuse_bodies_beyond_the_largest_remaining_length(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A real 256 MB payload would be wasteful; shrink the limit instead.
    monkeypatch.setattr(m, "MAX_VARINT", 16)
    assert m.publish("t", b"x" * 12) == b"\x30\x10\x00\x01t\x00" + b"x" * 12
    with pytest.raises(ValueError, match="exceeds the MQTT maximum"):
        m.publish("t", b"x" * 13)


# --- A real paho client against a server made of this codec ---------------------------------


def _recv_exact(conn: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("peer closed mid-packet")
        data += chunk
    return bytes(data)


def _read_packet(conn: socket.socket) -> tuple[int, int, bytes] | None:
    """(type, flags, body) of the next packet, None when the peer closed cleanly."""
    first = conn.recv(1)
    if not first:
        return None
    length_bytes = bytearray()
    while True:
        length_bytes += _recv_exact(conn, 1)
        if not length_bytes[-1] & 0x80 or len(length_bytes) == 4:
            break
    length, _ = m.decode_varint(bytes(length_bytes))
    return first[0] >> 4, first[0] & 0x0F, _recv_exact(conn, length)


class CodecServer:
    """A one-connection MQTT 5 server built only from the codec.

    It parses every packet the client sends (queued in `packets` as (name, parsed)) and
    answers with the codec's encoders. A failure in its thread is queued as ("error", exc).
    """

    def __init__(self, connack_properties: m.Properties | None = None) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(TIMEOUT)
        self.port: int = self._listener.getsockname()[1]
        self.connack_properties = connack_properties
        self.puback_replies: dict[str, tuple[int, str]] = {}  # topic -> (reason, reason string)
        self.packets: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._filters: set[str] = set()
        self._conn: socket.socket | None = None
        self._connected = threading.Event()
        self._closing = False
        self._send_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="codec-server", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self._listener.accept()
            conn.settimeout(TIMEOUT)
            self._conn = conn
            self._connected.set()
            while (packet := _read_packet(conn)) is not None:
                packet_type, flags, body = packet
                m.check_flags(packet_type, flags)
                reply = self._answer(PacketType(packet_type), flags, body)
                if reply is not None:
                    self.send(reply)
        except Exception as exc:  # handed to the test thread, which fails on it
            if not self._closing:
                self.packets.put(("error", exc))

    def _answer(self, packet_type: PacketType, flags: int, body: bytes) -> bytes | None:
        if packet_type == PacketType.CONNECT:
            self.packets.put(("CONNECT", m.parse_connect(body)))
            return m.connack(False, m.SUCCESS, self.connack_properties)
        if packet_type == PacketType.SUBSCRIBE:
            subscribe = m.parse_subscribe(flags, body)
            self.packets.put(("SUBSCRIBE", subscribe))
            self._filters.update(request.topic_filter for request in subscribe.requests)
            return m.suback(subscribe.packet_id, [request.qos for request in subscribe.requests])
        if packet_type == PacketType.UNSUBSCRIBE:
            unsubscribe = m.parse_unsubscribe(flags, body)
            self.packets.put(("UNSUBSCRIBE", unsubscribe))
            reasons = [
                m.SUCCESS if topic_filter in self._filters else m.NO_SUBSCRIPTION_EXISTED
                for topic_filter in unsubscribe.topic_filters
            ]
            return m.unsuback(unsubscribe.packet_id, reasons)
        if packet_type == PacketType.PUBLISH:
            message = m.parse_publish(flags, body)
            self.packets.put(("PUBLISH", message))
            assert message.packet_id is not None or message.qos == 0
            if message.qos == 1 and message.packet_id is not None:
                reason, text = self.puback_replies.get(message.topic, (m.SUCCESS, None))
                return m.puback(message.packet_id, reason, text)
            if message.qos == 2 and message.packet_id is not None:
                return m.pubrec(message.packet_id)
            return None
        if packet_type in (
            PacketType.PUBACK,
            PacketType.PUBREC,
            PacketType.PUBREL,
            PacketType.PUBCOMP,
        ):
            ack = m.parse_ack(body)
            self.packets.put((packet_type.name, ack))
            if packet_type == PacketType.PUBREC:
                return m.pubrel(ack.packet_id)
            if packet_type == PacketType.PUBREL:
                return m.pubcomp(ack.packet_id)
            return None
        if packet_type == PacketType.PINGREQ:
            self.packets.put(("PINGREQ", body))
            return m.pingresp()
        if packet_type == PacketType.DISCONNECT:
            self.packets.put(("DISCONNECT", m.parse_disconnect(body)))
            return None
        raise AssertionError(f"unexpected {packet_type.name}")

    def send(self, packet: bytes) -> None:
        assert self._connected.wait(TIMEOUT), "no client connected"
        assert self._conn is not None
        with self._send_lock:
            self._conn.sendall(packet)

    def next(self, name: str) -> Any:
        """The next packet the client sent, which must be a `name`."""
        try:
            got, parsed = self.packets.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"no {name} from the client within {TIMEOUT}s") from None
        if got == "error":
            raise AssertionError(f"the codec server failed while waiting for {name}") from parsed
        assert got == name, f"expected {name}, the client sent {got}: {parsed!r}"
        return parsed

    def close(self) -> None:
        self._closing = True
        if self._conn is not None:
            self._conn.close()
        self._listener.close()
        self._thread.join(TIMEOUT)
        leftovers = []
        while not self.packets.empty():
            leftovers.append(self.packets.get_nowait())
        errors = [item for item in leftovers if item[0] == "error"]
        assert not errors, errors


class PahoEvents:
    """paho's callbacks as a queue the test reads in order."""

    def __init__(self, client: paho.Client) -> None:
        self.queue: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        client.on_connect = lambda _c, _u, flags, rc, props: self._put(
            "connect", reason=rc.value, present=flags.session_present, properties=props
        )
        client.on_subscribe = lambda _c, _u, mid, codes, props: self._put(
            "subscribe", mid=mid, reasons=[code.value for code in codes], properties=props
        )
        client.on_unsubscribe = lambda _c, _u, mid, codes, props: self._put(
            "unsubscribe", mid=mid, reasons=[code.value for code in codes], properties=props
        )
        client.on_publish = lambda _c, _u, mid, rc, props: self._put(
            "publish", mid=mid, reason=rc.value, properties=props
        )
        client.on_message = lambda _c, _u, message: self._put("message", message=message)
        client.on_disconnect = lambda _c, _u, _flags, rc, props: self._put(
            "disconnect", reason=rc.value, properties=props
        )

    def _put(self, kind: str, **data: Any) -> None:
        self.queue.put((kind, data))

    def next(self, kind: str) -> dict[str, Any]:
        try:
            got, data = self.queue.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"paho reported no {kind} within {TIMEOUT}s") from None
        assert got == kind, f"expected paho's {kind}, got {got}: {data!r}"
        return data


@contextmanager
def codec_server(connack_properties: m.Properties | None = None) -> Iterator[CodecServer]:
    server = CodecServer(connack_properties)
    try:
        yield server
    finally:
        server.close()


def _mqtt5_client(client_id: str) -> tuple[paho.Client, PahoEvents]:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
    )
    return client, PahoEvents(client)


SERVER_CONNACK: m.Properties = {
    m.RECEIVE_MAXIMUM: 10,
    m.TOPIC_ALIAS_MAXIMUM: 4,
    m.RETAIN_AVAILABLE: 1,
    m.MAXIMUM_PACKET_SIZE: 1 << 20,
    m.WILDCARD_SUBSCRIPTION_AVAILABLE: 1,
    m.SUBSCRIPTION_IDENTIFIER_AVAILABLE: 1,
    m.SHARED_SUBSCRIPTION_AVAILABLE: 0,
    m.SERVER_KEEP_ALIVE: 50,
    m.REASON_STRING: "welcome",
    m.USER_PROPERTY: [("broker", "fleetcore")],
}


def test_paho_session_against_the_codec() -> None:
    """CONNECT with will, SUBSCRIBE, PUBLISH QoS 0/1/2 both ways, UNSUBSCRIBE, DISCONNECT."""
    with codec_server(SERVER_CONNACK) as server:
        client, events = _mqtt5_client("sensor-7")
        will_properties = _paho_properties(
            PacketTypes.WILLMESSAGE,
            WillDelayInterval=30,
            MessageExpiryInterval=600,
            PayloadFormatIndicator=1,
            ContentType="application/json",
            ResponseTopic="replies/sensor-7",
            CorrelationData=b"\x01\x02",
            UserProperty=[("origin", "will")],
        )
        client.will_set(
            "devices/sensor-7/status",
            b'{"online":false}',
            qos=1,
            retain=True,
            properties=will_properties,
        )
        client.username_pw_set("sensor-7", "s3cr\u00e9t")
        connect_properties = _paho_properties(
            PacketTypes.CONNECT,
            SessionExpiryInterval=3600,
            ReceiveMaximum=20,
            MaximumPacketSize=65536,
            TopicAliasMaximum=8,
            RequestProblemInformation=1,
            RequestResponseInformation=1,
            UserProperty=[("fw", "1.2.3"), ("fw", "rc")],
        )
        client.connect(
            "127.0.0.1", server.port, keepalive=45, clean_start=False, properties=connect_properties
        )
        client.loop_start()
        try:
            connect = server.next("CONNECT")
            assert connect == m.Connect(
                client_id="sensor-7",
                clean_start=False,
                keep_alive=45,
                username="sensor-7",
                password="s3cr\u00e9t".encode(),
                will=m.Will(
                    topic="devices/sensor-7/status",
                    payload=b'{"online":false}',
                    qos=1,
                    retain=True,
                    properties={
                        m.WILL_DELAY_INTERVAL: 30,
                        m.MESSAGE_EXPIRY_INTERVAL: 600,
                        m.PAYLOAD_FORMAT_INDICATOR: 1,
                        m.CONTENT_TYPE: "application/json",
                        m.RESPONSE_TOPIC: "replies/sensor-7",
                        m.CORRELATION_DATA: b"\x01\x02",
                        m.USER_PROPERTY: [("origin", "will")],
                    },
                ),
                properties={
                    m.SESSION_EXPIRY_INTERVAL: 3600,
                    m.RECEIVE_MAXIMUM: 20,
                    m.MAXIMUM_PACKET_SIZE: 65536,
                    m.TOPIC_ALIAS_MAXIMUM: 8,
                    m.REQUEST_PROBLEM_INFORMATION: 1,
                    m.REQUEST_RESPONSE_INFORMATION: 1,
                    m.USER_PROPERTY: [("fw", "1.2.3"), ("fw", "rc")],
                },
            )
            assert (connect.session_expiry, connect.receive_maximum) == (3600, 20)
            assert connect.maximum_packet_size == 65536

            connected = events.next("connect")
            assert (connected["reason"], connected["present"]) == (0, False)
            assert _paho_to_dict(connected["properties"]) == SERVER_CONNACK

            # SUBSCRIBE: options, Subscription Identifier, user property; SUBACK grants both.
            subscribe_properties = _paho_properties(
                PacketTypes.SUBSCRIBE, SubscriptionIdentifier=42, UserProperty=[("k", "v")]
            )
            result, mid = client.subscribe(
                [
                    (
                        "devices/sensor-7/cmd/+",
                        SubscribeOptions(
                            qos=1,
                            noLocal=True,
                            retainAsPublished=True,
                            retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB,
                        ),
                    ),
                    (
                        "fleet/#",
                        SubscribeOptions(qos=2, retainHandling=SubscribeOptions.RETAIN_DO_NOT_SEND),
                    ),
                ],
                properties=subscribe_properties,
            )
            assert result == paho.MQTT_ERR_SUCCESS
            assert server.next("SUBSCRIBE") == m.Subscribe(
                packet_id=mid,
                requests=[
                    m.SubscriptionRequest("devices/sensor-7/cmd/+", 1, True, True, 1),
                    m.SubscriptionRequest("fleet/#", 2, False, False, 2),
                ],
                properties={m.SUBSCRIPTION_IDENTIFIER: 42, m.USER_PROPERTY: [("k", "v")]},
            )
            subscribed = events.next("subscribe")
            assert (subscribed["mid"], subscribed["reasons"]) == (mid, [1, 2])

            # PUBLISH QoS 1 with properties; the short PUBACK completes it.
            publish_properties = _paho_properties(
                PacketTypes.PUBLISH,
                PayloadFormatIndicator=1,
                MessageExpiryInterval=120,
                ContentType="application/json",
                ResponseTopic="devices/sensor-7/reply",
                CorrelationData=b"req-1",
                UserProperty=[("unit", "C"), ("unit", "F")],
            )
            info = client.publish(
                "devices/sensor-7/telemetry", b'{"t":21.5}', qos=1, properties=publish_properties
            )
            info.wait_for_publish(TIMEOUT)
            assert server.next("PUBLISH") == m.Publish(
                topic="devices/sensor-7/telemetry",
                payload=b'{"t":21.5}',
                qos=1,
                retain=False,
                dup=False,
                packet_id=info.mid,
                properties=_paho_to_dict(publish_properties),
            )
            published = events.next("publish")
            assert (published["mid"], published["reason"]) == (info.mid, 0)

            # A refusal with a reason string: the long PUBACK form.
            server.puback_replies["devices/sensor-7/nobody"] = (
                m.NO_MATCHING_SUBSCRIBERS,
                "nobody listens",
            )
            info = client.publish("devices/sensor-7/nobody", b"", qos=1)
            info.wait_for_publish(TIMEOUT)
            assert server.next("PUBLISH").payload == b""
            published = events.next("publish")
            assert (published["mid"], published["reason"]) == (info.mid, 0x10)
            assert published["properties"].ReasonString == "nobody listens"

            # QoS 2: PUBLISH, our PUBREC, paho's PUBREL (flags 0010), our PUBCOMP.
            info = client.publish("devices/sensor-7/events", b"\x00\x01", qos=2, retain=True)
            info.wait_for_publish(TIMEOUT)
            message = server.next("PUBLISH")
            assert (message.qos, message.retain, message.packet_id) == (2, True, info.mid)
            assert server.next("PUBREL") == m.Ack(info.mid, 0, {})
            published = events.next("publish")
            assert (published["mid"], published["reason"]) == (info.mid, 0)

            # QoS 0 has no acknowledgement.
            info = client.publish("devices/sensor-7/ping", b"0", qos=0)
            assert server.next("PUBLISH") == m.Publish(
                "devices/sensor-7/ping", b"0", 0, False, False, None, {}
            )
            assert events.next("publish")["mid"] == info.mid  # paho reports QoS 0 once sent

            # Server to client, QoS 1: paho decodes our PUBLISH and acknowledges it.
            outgoing: m.Properties = {
                m.PAYLOAD_FORMAT_INDICATOR: 1,
                m.MESSAGE_EXPIRY_INTERVAL: 30,
                m.CONTENT_TYPE: "text/plain",
                m.RESPONSE_TOPIC: "devices/sensor-7/reply",
                m.CORRELATION_DATA: b"\x00\xff",
                m.SUBSCRIPTION_IDENTIFIER: [42, 7],
                m.USER_PROPERTY: [("a", "1"), ("a", "2")],
            }
            server.send(
                m.publish(
                    "devices/sensor-7/cmd/reboot", b"now", qos=1, packet_id=77, properties=outgoing
                )
            )
            received = events.next("message")["message"]
            assert (received.topic, received.payload, received.qos, received.mid) == (
                "devices/sensor-7/cmd/reboot",
                b"now",
                1,
                77,
            )
            assert _paho_to_dict(received.properties) == outgoing
            assert server.next("PUBACK") == m.Ack(77, 0, {})

            # Server to client, QoS 2: paho's PUBREC, our PUBREL, paho's PUBCOMP.
            server.send(m.publish("fleet/all", b"hello", qos=2, packet_id=78, retain=True))
            assert server.next("PUBREC") == m.Ack(78, 0, {})
            assert server.next("PUBCOMP") == m.Ack(78, 0, {})
            received = events.next("message")["message"]
            assert (received.topic, received.payload, received.qos, received.retain) == (
                "fleet/all",
                b"hello",
                2,
                True,
            )

            # UNSUBSCRIBE one filter we hold and one we do not.
            unsubscribe_properties = _paho_properties(
                PacketTypes.UNSUBSCRIBE, UserProperty=[("why", "done")]
            )
            result, mid = client.unsubscribe(
                ["fleet/#", "never/subscribed"], properties=unsubscribe_properties
            )
            assert result == paho.MQTT_ERR_SUCCESS
            assert server.next("UNSUBSCRIBE") == m.Unsubscribe(
                mid, ["fleet/#", "never/subscribed"], {m.USER_PROPERTY: [("why", "done")]}
            )
            unsubscribed = events.next("unsubscribe")
            assert (unsubscribed["mid"], unsubscribed["reasons"]) == (mid, [0, 0x11])

            # DISCONNECT with a reason code and properties.
            disconnect_properties = _paho_properties(
                PacketTypes.DISCONNECT, SessionExpiryInterval=0, ReasonString="bye"
            )
            client.disconnect(
                reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"),
                properties=disconnect_properties,
            )
            assert server.next("DISCONNECT") == m.Disconnect(
                m.DISCONNECT_WITH_WILL_MESSAGE,
                {m.SESSION_EXPIRY_INTERVAL: 0, m.REASON_STRING: "bye"},
            )
        finally:
            client.loop_stop()


def test_paho_pings_and_server_disconnect() -> None:
    with codec_server() as server:
        client, events = _mqtt5_client("pinger")
        client.connect("127.0.0.1", server.port, keepalive=1)
        client.loop_start()
        try:
            assert server.next("CONNECT").keep_alive == 1
            assert events.next("connect")["reason"] == 0
            # paho pings again only if it took our PINGRESP (else it closes the connection).
            assert server.next("PINGREQ") == b""
            assert server.next("PINGREQ") == b""
            server.send(m.disconnect(m.SERVER_SHUTTING_DOWN, "maintenance"))
            disconnected = events.next("disconnect")
            assert disconnected["reason"] == 0x8B
            assert disconnected["properties"].ReasonString == "maintenance"
        finally:
            client.loop_stop()


@contextmanager
def _captured_connect(client: paho.Client) -> Iterator[bytes]:
    """The raw CONNECT body paho sends (paho writes it inside connect() when not looping)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(TIMEOUT)
    try:
        client.connect("127.0.0.1", listener.getsockname()[1], keepalive=60)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(TIMEOUT)
            packet = _read_packet(conn)
            assert packet is not None
            packet_type, flags, body = packet
            assert (packet_type, flags) == (PacketType.CONNECT, 0)
            yield body
            client.disconnect()
    finally:
        listener.close()


def test_paho_mqtt311_connect_is_level_4_and_refused() -> None:
    client = paho.Client(
        paho.CallbackAPIVersion.VERSION2, client_id="old-device", protocol=paho.MQTTv311
    )
    with _captured_connect(client) as body:
        assert m.protocol_level(body) == 4
        with pytest.raises(ProtocolError, match="level 4") as caught:
            m.parse_connect(body)
        assert caught.value.reason == m.UNSUPPORTED_PROTOCOL_VERSION


def test_paho_connect_with_empty_client_id_and_no_credentials() -> None:
    # (paho sends a password only with a user name; password-only is covered by hand above.)
    client, _ = _mqtt5_client("")
    with _captured_connect(client) as body:
        assert m.protocol_level(body) == 5
        connect = m.parse_connect(body)
        assert connect.client_id == ""
        assert (connect.username, connect.password) == (None, None)
        assert (connect.clean_start, connect.keep_alive, connect.will) == (True, 60, None)
        assert connect.properties == {}
