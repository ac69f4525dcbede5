"""The MQTT 3.1.1 codec (fleetcore.mqtt.mqtt311) against the specification's own words:
table tests for what a client may send wrong, and round trips of what is right.

Each malformed case names the conformance statement it breaks; all of them raise
ProtocolError, which closes a 3.1.1 connection (or, in a CONNECT, decides its CONNACK).
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fleetcore.mqtt import mqtt311 as m
from fleetcore.mqtt.connect import Refusal, read_connect, refusal_connack
from fleetcore.mqtt.mqtt5 import ProtocolError
from tests.support.fuzz_mqtt import connect311, frame, string, topic_names, u16
from tests.support.hypothesis_profiles import fuzz

HEADER = string("MQTT") + b"\x04"  # protocol name and level 4


def connect_body(flags: int, payload: bytes, keep_alive: int = 60) -> bytes:
    return HEADER + bytes([flags]) + u16(keep_alive) + payload


# -- CONNECT ------------------------------------------------------------------------------


def test_connect_with_every_field() -> None:
    payload = string("c1") + string("will/t") + u16(3) + b"bye" + string("user") + u16(2) + b"pw"
    connect = m.parse_connect(connect_body(0xC2 | 0x04 | 0x08 | 0x20, payload))
    assert connect == m.Connect(
        "c1", True, 60, "user", b"pw", m.Will("will/t", b"bye", qos=1, retain=True)
    )


@pytest.mark.parametrize(
    ("body", "reason", "statement"),
    [
        (connect_body(0x03, string("c")), 0x81, "reserved flag set [MQTT-3.1.2-3]"),
        (connect_body(0x1E, string("c") + string("t") + u16(0)), 0x81, "will QoS 3"),
        (connect_body(0x0A, string("c")), 0x81, "will QoS without will [MQTT-3.1.2-11]"),
        (connect_body(0x22, string("c")), 0x81, "will retain without will [MQTT-3.1.2-15]"),
        (connect_body(0x02, b"\x00\x02\xff\xfe"), 0x81, "client id not UTF-8 [MQTT-1.5.3-1]"),
        (connect_body(0x02, string("a\x00b")), 0x81, "U+0000 in the client id [MQTT-1.5.3-2]"),
        (connect_body(0x06, string("c") + string("a/+") + u16(0)), 0x81, "wildcard will topic"),
        (connect_body(0x02, string("c") + b"x"), 0x81, "a byte past the payload"),
        (connect_body(0x82, string("c")), 0x81, "user name flag, no user name"),
        (connect_body(0x42, string("c") + u16(1) + b"p"), 0x86, "password alone [3.1.2-22]"),
        (connect_body(0x00, string("")), 0x85, "empty id, persistent session [MQTT-3.1.3-8]"),
        (string("MQTT") + b"\x03\x02\x00\x3c" + string("c"), 0x84, "protocol level 3"),
        (string("MQTX") + b"\x04\x02\x00\x3c" + string("c"), 0x81, "not MQTT [MQTT-3.1.2-1]"),
    ],
)
def test_malformed_connect(body: bytes, reason: int, statement: str) -> None:
    with pytest.raises(ProtocolError) as raised:
        m.parse_connect(body)
    assert raised.value.reason == reason, statement


def test_read_connect_answers_each_version_in_its_own_words() -> None:
    assert read_connect(connect_body(0x42, string("c") + u16(1) + b"p"), "r:1") == Refusal(4, 0x86)
    mqisdp = string("MQIsdp") + b"\x03\x02\x00\x3c" + string("c")
    assert read_connect(mqisdp, "r:1") == Refusal(4, 0x84)
    assert read_connect(connect_body(0x01, string("c")), "r:1") is None  # malformed: no CONNACK
    assert refusal_connack(4, 0x86) == b"\x20\x02\x00\x04"
    assert refusal_connack(4, m.NOT_AUTHORIZED) == b"\x20\x02\x00\x05"
    assert refusal_connack(4, 0x89) == b"\x20\x02\x00\x03"  # server busy: "unavailable"
    assert refusal_connack(5, m.BAD_USERNAME_PASSWORD)[3] == 0x86
    request = read_connect(connect_body(0x02, string("")), "r:1")
    assert request is not None
    assert not isinstance(request, Refusal)
    assert request.random_id


@fuzz()
@given(data=connect311())
def test_any_generated_connect_is_a_request_a_refusal_or_nothing(data: bytes) -> None:
    header = m.fixed_header(data)
    assert header is not None
    length, head = header
    outcome = read_connect(data[head : head + length], "fuzz:1")
    assert outcome is None or isinstance(outcome, Refusal) or outcome.client.remote == "fuzz:1"


# -- PUBLISH ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "body", "statement"),
    [
        (0x06, string("t") + u16(1), "QoS 3 [MQTT-3.3.1-4]"),
        (0x02, string("t") + u16(0), "packet identifier 0 [MQTT-2.3.1-1]"),
        (0x02, string("t") + b"\x00", "packet identifier cut short"),
        (0x00, u16(5) + b"abc", "topic longer than the packet [MQTT-2.2.2-2]"),
        (0x00, b"\x00", "topic length cut short"),
        (0x00, u16(2) + b"\xc0\x80", "overlong UTF-8 topic [MQTT-1.5.3-1]"),
        (0x00, string("a\x00"), "U+0000 in the topic [MQTT-1.5.3-2]"),
    ],
)
def test_malformed_publish(flags: int, body: bytes, statement: str) -> None:
    with pytest.raises(ProtocolError):
        m.parse_publish(flags, body)


def test_publish_keeps_wildcards_for_the_broker_to_refuse() -> None:
    # A topic with a wildcard is a refused message (PUBACK, dead letter), not a broken packet.
    assert m.parse_publish(0x02, string("a/#") + u16(9)).topic == "a/#"


@fuzz()
@given(
    topic=topic_names,
    payload=st.binary(max_size=300),
    qos=st.integers(0, 2),
    packet_id=st.integers(1, 0xFFFF),
    retain=st.booleans(),
    dup=st.booleans(),
)
def test_publish_round_trip(
    topic: str, payload: bytes, qos: int, packet_id: int, retain: bool, dup: bool
) -> None:
    pid = packet_id if qos else None
    dup = dup and bool(qos)
    packet = m.publish(topic, payload, qos=qos, packet_id=pid, retain=retain, dup=dup)
    header = m.fixed_header(packet)
    assert header is not None
    length, head = header
    assert head + length == len(packet)
    assert m.parse_packet(packet[0], packet[head:]) == m.Publish(
        topic, payload, qos, retain, dup, pid
    )


# -- the other packets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "body", "statement"),
    [
        (0x40, b"\x00", "PUBACK one byte long [MQTT-2.2.2-2]"),
        (0x40, b"\x00\x01\x00", "PUBACK three bytes long"),
        (0x40, b"\x00\x00", "PUBACK packet identifier 0"),
        (0x60, b"\x00\x01", "PUBREL flags 0000 [MQTT-3.6.1-1]"),
        (0x41, b"\x00\x01", "PUBACK flags 0001"),
        (0x80, u16(1) + string("a") + b"\x00", "SUBSCRIBE flags 0000 [MQTT-3.8.1-1]"),
        (0x82, u16(1), "SUBSCRIBE without a filter [MQTT-3.8.3-3]"),
        (0x82, u16(1) + string("a") + b"\x03", "QoS 3 requested"),
        (0x82, u16(1) + string("a") + b"\x41", "reserved QoS bits [MQTT-3.8.3-4]"),
        (0x82, u16(1) + string("a"), "requested QoS missing"),
        (0x82, u16(1) + u16(1) + b"\xff\x00", "filter not UTF-8"),
        (0xA2, u16(1), "UNSUBSCRIBE without a filter [MQTT-3.10.3-2]"),
        (0xA0, u16(1) + string("a"), "UNSUBSCRIBE flags 0000 [MQTT-3.10.1-1]"),
        (0xC0, b"\xe0\x00", "PINGREQ with a body"),
        (0xE0, b"\x00", "DISCONNECT with a body"),
        (0xE2, b"", "DISCONNECT flags 0010 [MQTT-3.14.1-1]"),
        (0x10, connect_body(0x02, string("c")), "a second CONNECT [MQTT-3.1.0-2]"),
        (0x20, b"\x00\x00", "a CONNACK from a client"),
        (0x90, u16(1) + b"\x00", "a SUBACK from a client"),
    ],
)
def test_malformed_or_unexpected_packet(first: int, body: bytes, statement: str) -> None:
    with pytest.raises(ProtocolError):
        m.parse_packet(first, body)


def test_packets_a_client_sends() -> None:
    assert m.parse_packet(0x40, b"\x00\x07") == m.Ack(m.PUBACK, 7)
    assert m.parse_packet(0x62, b"\x00\x07") == m.Ack(m.PUBREL, 7)
    assert m.parse_packet(0x82, u16(3) + string("a/+") + b"\x01" + string("#") + b"\x00") == (
        m.Subscribe(3, [("a/+", 1), ("#", 0)])
    )
    assert m.parse_packet(0xA2, u16(4) + string("a") + string("b")) == m.Unsubscribe(4, ["a", "b"])
    assert m.parse_packet(0xC0, b"") == m.Empty(m.PINGREQ)
    assert m.parse_packet(0xE0, b"") == m.Empty(m.DISCONNECT)


def test_encoders() -> None:
    assert m.connack(True, 0) == b"\x20\x02\x01\x00"
    assert m.puback(258) == b"\x40\x02\x01\x02"
    assert m.pubrec(1) == b"\x50\x02\x00\x01"
    assert m.pubcomp(1) == b"\x70\x02\x00\x01"
    assert m.suback(9, [0, 1, 0x80]) == frame(0x90, b"\x00\x09\x00\x01\x80")
    assert m.unsuback(9) == b"\xb0\x02\x00\x09"
    assert m.pingresp() == b"\xd0\x00"
    for bad in (
        lambda: m.connack(True, 5),  # session present on a refusal [MQTT-3.2.2-4]
        lambda: m.connack(False, 6),
        lambda: m.suback(1, [3]),
        lambda: m.suback(1, []),
        lambda: m.publish("a/+", b""),
        lambda: m.publish("t", b"", qos=1),  # no packet identifier
        lambda: m.publish("t", b"", qos=0, dup=True),
        lambda: m.puback(0),
    ):
        with pytest.raises(ValueError, match=r"."):
            bad()


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x30\x00", (0, 2)),
        (b"\x30\x7f", (127, 2)),
        (b"\x30\x80\x01", (128, 3)),
        (b"\x30\xff\xff\xff\x7f", (268_435_455, 5)),
        (b"\x30\x80", None),  # the rest of the length is still on its way
        (b"\x30", None),
    ],
)
def test_fixed_header(data: bytes, expected: tuple[int, int] | None) -> None:
    assert m.fixed_header(data) == expected


def test_fixed_header_of_five_length_bytes_is_malformed() -> None:
    with pytest.raises(ProtocolError):
        m.fixed_header(b"\x30\xff\xff\xff\xff\x01")


def _parsed_or_reason(first: int, data: bytes) -> int | None:
    try:
        m.parse_packet(first, data)
    except ProtocolError as exc:
        return exc.reason
    return None


@fuzz()
@given(data=st.binary(max_size=64), first=st.integers(0, 255))
def test_any_bytes_parse_or_are_refused(data: bytes, first: int) -> None:
    assert _parsed_or_reason(first, data) in (None, 0x81, 0x82)
