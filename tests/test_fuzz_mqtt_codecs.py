"""Fuzzing the MQTT codecs the embedded broker reads devices with: MQTT 5 (our codec,
fleetcore.mqtt.mqtt5) and MQTT 3.1.1 (fleetcore.mqtt.mqtt311), framed as the broker frames them.

Any bytes end in a packet or the documented refusal (mqtt5.ProtocolError with a reason code,
which for 3.1.1 ends the connection), within a deadline and without allocating what a
packet merely declares. Valid packets built from
values parse back to those values, our encoders' packets parse back to what was encoded,
and a 3.1.1 packet is read to its end and no further.
"""

from __future__ import annotations

import contextlib
import socket
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fleetcore.mqtt import mqtt5 as m
from fleetcore.mqtt import mqtt311
from fleetcore.mqtt.connect import Refusal, read_connect
from fleetcore.mqtt.connection import NotConnect, TooLarge
from fleetcore.mqtt.limits import MqttLimits
from fleetcore.mqtt.mqtt5 import PacketType, ProtocolError
from tests.support.broker_thread import BrokerThread, broker_in_thread
from tests.support.fuzz_mqtt import (
    Built,
    ack5,
    connect5,
    connect311,
    disconnect5,
    frame,
    hello,
    mutations,
    packet311,
    packets_after_connect,
    publish5,
    subscribe5,
    texts,
    topic_names,
    unsubscribe5,
    varint,
)
from tests.support.hypothesis_profiles import fuzz

# What a parser may answer a peer with (mqtt5 module docstring).
REASONS = {0x81, 0x82, 0x84, 0x94, 0x99}
PARSE5: dict[int, Callable[[int, bytes], Any]] = {
    PacketType.CONNECT: lambda flags, body: m.parse_connect(body),
    PacketType.PUBLISH: m.parse_publish,
    PacketType.PUBACK: lambda flags, body: m.parse_ack(body),
    PacketType.PUBREC: lambda flags, body: m.parse_ack(body),
    PacketType.PUBREL: lambda flags, body: m.parse_ack(body),
    PacketType.PUBCOMP: lambda flags, body: m.parse_ack(body),
    PacketType.SUBSCRIBE: m.parse_subscribe,
    PacketType.UNSUBSCRIBE: m.parse_unsubscribe,
    PacketType.DISCONNECT: lambda flags, body: m.parse_disconnect(body),
}


def _parse5(packet_type: int, flags: int, body: bytes) -> Any:
    """As handler5 reads a packet: the fixed header's flags, then the body's parser."""
    try:
        m.check_flags(packet_type, flags)
        parse = PARSE5.get(packet_type)
        return None if parse is None else parse(flags, body)
    except ProtocolError as exc:
        return exc


def _assert_parsed_or_refused(outcome: Any) -> None:
    if isinstance(outcome, ProtocolError):
        assert outcome.reason in REASONS
        assert str(outcome)


# --- MQTT 5 ------------------------------------------------------------------------------


@fuzz()
@given(
    packet_type=st.sampled_from(sorted(PARSE5)),
    flags=st.integers(0, 15),
    body=st.binary(max_size=512),
)
# Edge cases kept (not defects): property lengths of 268,435,455 in bodies of a few bytes.
@example(
    packet_type=PacketType.CONNECT,
    flags=0,
    body=b"\x00\x04MQTT\x05\x00\x00\x00\xff\xff\xff\xff\x7f",
)
@example(packet_type=PacketType.PUBLISH, flags=0, body=b"\x00\x01t\x08\xff\xff\xff\x7f")
def test_mqtt5_any_body(packet_type: int, flags: int, body: bytes) -> None:
    _assert_parsed_or_refused(_parse5(packet_type, flags, body))


BUILDERS = {
    PacketType.CONNECT: connect5(),
    PacketType.PUBLISH: publish5(),
    PacketType.PUBACK: ack5(),
    PacketType.PUBREL: ack5().map(lambda b: Built(b.body, b.expected, 0b0010)),
    PacketType.SUBSCRIBE: subscribe5(),
    PacketType.UNSUBSCRIBE: unsubscribe5(),
    PacketType.DISCONNECT: disconnect5(),
}


@fuzz()
@given(data=st.data(), packet_type=st.sampled_from(sorted(BUILDERS)))
def test_mqtt5_valid_packets_parse_to_their_values(data: st.DataObject, packet_type: int) -> None:
    built = data.draw(BUILDERS[packet_type])
    parsed = _parse5(packet_type, built.flags, built.body)
    assert not isinstance(parsed, ProtocolError), parsed
    assert asdict(parsed) == built.expected


@fuzz()
@given(data=st.data(), packet_type=st.sampled_from(sorted(BUILDERS)))
def test_mqtt5_mutated_packets(data: st.DataObject, packet_type: int) -> None:
    flags, body = data.draw(mutations(BUILDERS[packet_type]))
    _assert_parsed_or_refused(_parse5(packet_type, flags, body))


def _split(packet: bytes) -> tuple[int, int, bytes]:
    """(type, flags, body) of a whole packet, checking its Remaining Length."""
    length, offset = m.decode_varint(packet, 1)
    assert offset + length == len(packet)
    return packet[0] >> 4, packet[0] & 0x0F, packet[offset:]


@fuzz()
@given(built=publish5())
def test_mqtt5_publish_encoder_round_trip(built: Built) -> None:
    fields = built.expected
    packet = m.publish(
        fields["topic"],
        fields["payload"],
        qos=fields["qos"],
        packet_id=fields["packet_id"],
        retain=fields["retain"],
        dup=fields["dup"],
        properties=fields["properties"],
    )
    kind, flags, body = _split(packet)
    assert kind == PacketType.PUBLISH
    assert asdict(m.parse_publish(flags, body)) == fields


PUBACK_REASONS = [0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x97, 0x99]


@fuzz()
@given(
    packet_id=st.integers(1, 0xFFFF),
    reason=st.sampled_from(PUBACK_REASONS),
    reason_string=st.none() | texts,
    encoder=st.sampled_from(["puback", "pubrec", "pubrel", "pubcomp"]),
)
def test_mqtt5_ack_encoders_round_trip(
    packet_id: int, reason: int, reason_string: str | None, encoder: str
) -> None:
    if encoder == "puback":
        packet = m.puback(packet_id, reason, reason_string)
        expected_properties = {} if reason_string is None else {0x1F: reason_string}
    else:
        reason = reason if encoder == "pubrec" else reason and 0x92
        packet = getattr(m, encoder)(packet_id, reason)
        expected_properties = {}
    kind, flags, body = _split(packet)
    m.check_flags(kind, flags)
    assert m.parse_ack(body) == m.Ack(packet_id, reason, expected_properties)


@fuzz()
@given(
    reason=st.sampled_from([0x00, 0x80, 0x81, 0x82, 0x87, 0x8B, 0x8D, 0x8E, 0x93, 0x98]),
    reason_string=st.none() | texts,
)
def test_mqtt5_disconnect_encoder_round_trip(reason: int, reason_string: str | None) -> None:
    kind, flags, body = _split(m.disconnect(reason, reason_string))
    m.check_flags(kind, flags)
    properties = {} if reason_string is None else {0x1F: reason_string}
    assert m.parse_disconnect(body) == m.Disconnect(reason, properties)


@fuzz()
@given(value=st.integers(0, m.MAX_VARINT), tail=st.binary(max_size=4))
def test_varint_round_trip(value: int, tail: bytes) -> None:
    encoded = m.encode_varint(value)
    assert encoded == varint(value)
    assert m.decode_varint(encoded + tail) == (value, len(encoded))


def _peak_bytes(work: Callable[[], object]) -> int:
    """The most memory `work` held at once (tracemalloc)."""
    tracemalloc.start()
    try:
        work()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@fuzz(scale=0.05)
@given(
    packet_type=st.sampled_from(sorted(PARSE5)),
    declared=st.sampled_from([m.MAX_VARINT, 0xFFFF, 1 << 20]),
    where=st.sampled_from(["properties", "string"]),
)
def test_mqtt5_declared_lengths_are_not_allocated(
    packet_type: int, declared: int, where: str
) -> None:
    # A length field claims far more than the body holds: refused, nothing that size held.
    header = {PacketType.CONNECT: b"\x00\x04MQTT\x05\x00\x00\x00"}.get(packet_type, b"\x00\x01")
    claim = varint(declared) if where == "properties" else b"\xff\xff"
    body = header + claim + b"x" * 16
    flags = {PacketType.SUBSCRIBE: 2, PacketType.UNSUBSCRIBE: 2, PacketType.PUBREL: 2}
    peak = _peak_bytes(lambda: _parse5(packet_type, flags.get(packet_type, 0), body))
    assert peak < 256 * 1024


@fuzz(scale=0.05)
@given(
    packet_type=st.sampled_from(sorted(PARSE5)), filler=st.sampled_from([b"\x00", b"\xff", b"\x26"])
)
def test_mqtt5_one_mebibyte_of_garbage(packet_type: int, filler: bytes) -> None:
    # Bounded by the profile's deadline: a parser linear in its input decodes this at once.
    _assert_parsed_or_refused(_parse5(packet_type, 0, filler * (1 << 20)))


# --- MQTT 3.1.1 --------------------------------------------------------------------------


def _first_packet(data: bytes) -> Any:
    """The broker's reading of a connection's first packet (connection.py frames it, then
    connect.read_connect): a request, a refusal, None, or the exception that ends it."""
    try:
        if len(data) < 2 or data[0] >> 4 != 1:
            return NotConnect()
        header = mqtt311.fixed_header(data)
        if header is None:
            return None  # the connection waits for the rest (until the CONNECT deadline)
        length, head = header
        if MqttLimits().connect_too_large(length):
            return TooLarge()
        if len(data) - head < length:
            return None
        return read_connect(data[head : head + length], "fuzz:1")
    except ProtocolError as exc:
        return exc


@fuzz()
@given(data=st.binary(max_size=512) | connect311())
def test_mqtt311_first_packet(data: bytes) -> None:
    outcome = _first_packet(data)
    if isinstance(outcome, ProtocolError):
        assert outcome.reason == 0x81  # a Remaining Length over four bytes
        return
    assert (
        outcome is None or isinstance(outcome, (Refusal, NotConnect, TooLarge)) or (outcome.client)
    )
    if isinstance(outcome, Refusal):
        assert outcome.reason in (0x84, 0x85, 0x86) or outcome.protocol == 5


SENTINEL = b"\xc0\x00"  # a PINGREQ: what must come next once a packet is read to its end


def _next_packet(data: bytes) -> tuple[Any, tuple[int, int] | None]:
    """One packet as the 3.1.1 handler reads it after CONNECT (framed by its fixed header,
    decoded by mqtt311.parse_packet), and where the next packet starts."""
    stream = data + SENTINEL
    header = mqtt311.fixed_header(stream)
    assert header is not None
    length, head = header
    try:
        packet = mqtt311.parse_packet(stream[0], stream[head : head + length])
    except ProtocolError as exc:
        return exc, None
    return packet, mqtt311.fixed_header(stream, head + length)


@fuzz()
@given(data=packet311())
@example(data=frame(0xC0, b"\xe0\x00"))  # a PINGREQ with a body: amqtt read it as a DISCONNECT
@example(data=frame(0x40, b"\x00\x01\xc0"))  # a PUBACK one byte long
@example(data=frame(0x32, b"\x00\x01t"))  # QoS 1, no room for the packet id
@example(data=frame(0x82, b"\x00\x01\x00\x01\xff\x00\x00\x01a\x01"))  # a filter not UTF-8
@example(data=frame(0x30, b"\x00\x01\xff" + b"\x00" * 9))  # a topic not UTF-8
@example(data=frame(0x82, b"\x00\x01"))  # a SUBSCRIBE without a filter
@example(data=frame(0x82, b"\x00\x01\x00\x01a\x03"))  # QoS 3 requested
@example(data=frame(0x80, b"\x00\x01\x00\x01a\x00"))  # SUBSCRIBE flags 0000
def test_mqtt311_packet_is_read_to_its_end(data: bytes) -> None:
    packet, after = _next_packet(data)
    if isinstance(packet, ProtocolError):
        assert packet.reason in (0x81, 0x82)
        assert str(packet)
        return
    # Exactly this packet was consumed: what follows is the sentinel, whole.
    assert after == (0, len(data) + 2)
    # And it is a well-formed one: reserved flags as the table says, UTF-8 strings without
    # U+0000, a SUBSCRIBE or UNSUBSCRIBE with filters, QoS 0-2.
    kind, flags = data[0] >> 4, data[0] & 0x0F
    if kind == PacketType.PUBLISH:
        assert isinstance(packet, mqtt311.Publish)
        assert flags & 0x06 != 0x06
        assert "\x00" not in packet.topic
        assert packet.topic.encode() in data
    else:
        assert flags == (0b0010 if kind in (6, 8, 10) else 0)
    if isinstance(packet, mqtt311.Subscribe | mqtt311.Unsubscribe):
        entries = (
            packet.requests
            if isinstance(packet, mqtt311.Subscribe)
            else [(f, 0) for f in packet.topic_filters]
        )
        assert entries
        for topic_filter, qos in entries:
            assert qos in (0, 1, 2)
            assert "\x00" not in topic_filter
            assert topic_filter.encode() in data


@fuzz(scale=0.05)
@given(
    first_byte=st.sampled_from([0x10, 0x30, 0x32, 0x82, 0xC0]),
    declared=st.sampled_from([1 << 20, m.MAX_VARINT]),
)
def test_mqtt311_declared_length_is_not_allocated(first_byte: int, declared: int) -> None:
    # 256 MiB declared, 16 bytes sent: nothing that size is held while the rest is awaited.
    data = bytes([first_byte]) + varint(declared) + b"\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"
    outcome: list[Any] = []
    peak = _peak_bytes(lambda: outcome.append(_first_packet(data)))
    assert peak < 1 << 20
    assert outcome[0] is None or isinstance(outcome[0], (TooLarge, NotConnect))


@fuzz()
@given(topic=topic_names, payload=st.binary(max_size=64), qos=st.integers(0, 1))
def test_mqtt311_valid_publish_reads_as_sent(topic: str, payload: bytes, qos: int) -> None:
    body = len(topic.encode()).to_bytes(2, "big") + topic.encode()
    body += b"\x00\x07" if qos else b""
    packet, after = _next_packet(frame(0x30 | qos << 1, body + payload))
    assert isinstance(packet, mqtt311.Publish)
    assert (packet.topic, packet.payload, packet.qos) == (topic, payload, qos)
    assert after is not None


@fuzz()
@given(topic=topic_names, payload=st.binary(max_size=64), qos=st.integers(0, 1))
def test_mqtt311_publish_encoder_round_trip(topic: str, payload: bytes, qos: int) -> None:
    packet_id = 7 if qos else None
    encoded = mqtt311.publish(topic, payload, qos=qos, packet_id=packet_id, retain=True)
    parsed, _ = _next_packet(encoded)
    assert parsed == mqtt311.Publish(topic, payload, qos, True, False, packet_id)


# --- Both, through the running broker ----------------------------------------------------

SOCKET_TIMEOUT_S = 10.0  # the bound on how long the broker may take to end a connection


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerThread]:
    """One FleetBroker for the module; nothing may reach its error log, even at shutdown."""
    with broker_in_thread() as running:
        yield running
    assert not running.errors, [r.getMessage() for r in running.errors]


def _session(port: int, data: bytes) -> bytes:
    """Send `data` on a new connection, half-close it, and read until the broker closes."""
    received = bytearray()
    address = ("127.0.0.1", port)
    with (
        socket.create_connection(address, timeout=SOCKET_TIMEOUT_S) as sock,
        contextlib.suppress(ConnectionError),  # a reset is an end too
    ):
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        while chunk := sock.recv(65536):
            received += chunk
    return bytes(received)


@fuzz(scale=0.5, deadline=None)
@given(version=st.sampled_from([4, 5]), data=st.data())
def test_broker_reads_anything_a_connected_client_sends(
    broker: BrokerThread, version: int, data: st.DataObject
) -> None:
    packets = data.draw(st.lists(packets_after_connect(version), max_size=4))
    answer = _session(
        broker.port, hello(version, f"fuzz{version}", "dev1", "pw1") + b"".join(packets)
    )
    assert answer[:1] == b"\x20"  # CONNACK: the device was connected when the bytes came
    assert not broker.errors, [r.getMessage() for r in broker.errors]


@fuzz(scale=0.5, deadline=None)
@given(first=st.binary(max_size=256) | connect311() | connect5().map(lambda b: frame(0x10, b.body)))
def test_broker_reads_any_first_packet(broker: BrokerThread, first: bytes) -> None:
    _session(broker.port, first)
    assert not broker.errors, [r.getMessage() for r in broker.errors]
    # And it still serves a device.
    assert _session(broker.port, hello(4, "after", "dev1", "pw1"))[:4] == b"\x20\x02\x00\x00"


def test_broker_ends_a_connection_on_a_malformed_packet(broker: BrokerThread) -> None:
    # The handlers read through the checks above: a 3.1.1 PINGREQ with a body is malformed
    # (amqtt answered it, then read its body as a DISCONNECT); an MQTT 5 PINGREQ with a
    # reserved flag set is answered DISCONNECT 0x81 (it was answered PINGRESP).
    answer = _session(broker.port, hello(4, "malformed", "dev1", "pw1") + frame(0xC0, b"\xe0\x00"))
    assert answer == b"\x20\x02\x00\x00"
    answer = _session(broker.port, hello(5, "malformed", "dev1", "pw1") + frame(0xC1, b""))
    assert answer.endswith(b"\xe0\x01\x81")
    assert b"\xd0\x00" not in answer
