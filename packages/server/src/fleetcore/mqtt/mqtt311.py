"""MQTT 3.1.1 packet codec for the server side of the embedded broker (OASIS MQTT 3.1.1).

Pure, in the style of the MQTT 5 codec (fleetcore.mqtt.mqtt5), whose data types it shares
(Variable Byte Integer, strings, the `Reader` cursor, packet identifiers, fixed header
flags): the ``parse_*`` functions take a packet's body (every byte after the fixed header)
and return a frozen dataclass; the encoders take values and return a whole packet.

Strict, because a lenient reader is how a peer desynchronises a connection: every field is
held to the packet's Remaining Length, and a packet whose fields do not fill its body
exactly is malformed [MQTT-2.2.2-2]; strings must be well-formed UTF-8 without U+0000
[MQTT-1.5.3-1/2]; reserved flags must hold their values (Table 2.2, [MQTT-3.1.2-3],
[MQTT-3.8.3-4]); SUBSCRIBE and UNSUBSCRIBE carry at least one filter [MQTT-3.8.3-3],
[MQTT-3.10.3-2]; packet identifiers are not 0 [MQTT-2.3.1-1].

3.1.1 has no reason codes after the CONNECT: whatever is wrong raises `ProtocolError`, and
the broker closes the connection. Its ``reason`` is the MQTT 5 reason code for the same
fault, so one table (the broker's) turns a refused CONNECT into either version's CONNACK:
0x84 for a protocol level other than 4, 0x85 for an empty client id with a persistent
session [MQTT-3.1.3-8], 0x86 for a password without a user name [MQTT-3.1.2-22]; 0x81 means
close without a CONNACK [MQTT-3.1.4-1].
"""

from __future__ import annotations

from dataclasses import dataclass

from fleetcore.mqtt.mqtt5 import (
    BAD_USER_NAME_OR_PASSWORD,
    CLIENT_IDENTIFIER_NOT_VALID,
    MALFORMED_PACKET,
    PROTOCOL_ERROR,
    UNSUPPORTED_PROTOCOL_VERSION,
    ProtocolError,
    Reader,
    check_flags,
    decode_utf8,
    encode_string,
    frame,
    packet_id_bytes,
    protocol_level,
    read_connect_flags,
    read_packet_id,
)

PROTOCOL_LEVEL = 4

# Control packet types (2.2.1): the high four bits of the fixed header's first byte.
CONNECT, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 3, 4, 5, 6, 7
SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT = 8, 10, 12, 14

# CONNACK return codes (3.2.2.3, Table 3.1).
CONNECTION_ACCEPTED = 0x00
UNACCEPTABLE_PROTOCOL_VERSION = 0x01
IDENTIFIER_REJECTED = 0x02
SERVER_UNAVAILABLE = 0x03
BAD_USERNAME_PASSWORD = 0x04
NOT_AUTHORIZED = 0x05

SUBSCRIPTION_FAILURE = 0x80  # a SUBACK return code (3.9.3)


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(MALFORMED_PACKET, message)


# --- CONNECT / CONNACK (3.1, 3.2) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    clean_session: bool
    keep_alive: int
    username: str | None
    password: bytes | None
    will: Will | None


def parse_connect(body: bytes) -> Connect:
    """A CONNECT's body, protocol level 4 only (see the module docstring for refusals)."""
    level = protocol_level(body)  # also: the protocol name is "MQTT", else 0x81
    if level != PROTOCOL_LEVEL:
        raise ProtocolError(UNSUPPORTED_PROTOCOL_VERSION, f"protocol level {level} is not 4")
    reader = Reader(body, 7)
    flags = read_connect_flags(reader, stray_will_bits=_malformed)
    keep_alive = reader.u16("keep alive")
    client_id = reader.string("client identifier")
    will = None
    if flags.will:
        topic = reader.string("will topic")
        if not topic or "+" in topic or "#" in topic:
            raise _malformed(f"will topic {topic!r} is not a topic name")
        will = Will(topic, reader.binary("will message"), flags.will_qos, flags.will_retain)
    username = reader.string("user name") if flags.username else None
    password = reader.binary("password") if flags.password else None
    reader.expect_end("the CONNECT payload")
    clean_session = flags.clean
    if password is not None and username is None:
        raise ProtocolError(BAD_USER_NAME_OR_PASSWORD, "a password without a user name")
    if not client_id and not clean_session:
        raise ProtocolError(CLIENT_IDENTIFIER_NOT_VALID, "an empty client id needs a clean session")
    return Connect(client_id, clean_session, keep_alive, username, password, will)


def connack(session_present: bool, code: int) -> bytes:
    """A CONNACK; Session Present is 0 when the connection is refused [MQTT-3.2.2-4]."""
    if not 0 <= code <= NOT_AUTHORIZED:
        raise ValueError(f"{code!r} is not an MQTT 3.1.1 CONNACK return code")
    if session_present and code:
        raise ValueError("Session Present must be 0 when the CONNACK refuses the connection")
    return bytes([0x20, 2, 1 if session_present else 0, code])


# --- PUBLISH (3.3) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None


def parse_publish(flags: int, body: bytes) -> Publish:
    """A client's PUBLISH: ``flags`` are the low four bits of the fixed header's first byte.

    Wildcards in the topic are left to the broker (it refuses the message, not the packet).
    """
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _malformed("PUBLISH with QoS 3")
    if len(body) < 2:
        raise _malformed("topic name is truncated")
    end = 2 + ((body[0] << 8) | body[1])
    if qos:
        if end + 2 > len(body):
            raise _malformed("PUBLISH packet identifier is truncated")
        packet_id: int | None = (body[end] << 8) | body[end + 1]
        if not packet_id:
            raise _malformed("PUBLISH packet identifier must not be 0")
        payload = body[end + 2 :]
    elif end > len(body):
        raise _malformed("topic name is truncated")
    else:
        packet_id, payload = None, body[end:]
    return Publish(
        decode_utf8(body[2:end], "topic name"),
        payload,
        qos,
        bool(flags & 0x01),
        bool(flags & 0x08),
        packet_id,
    )


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int | None = None,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    """A PUBLISH to a client."""
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos!r}")
    if not topic or "+" in topic or "#" in topic:
        raise ValueError(f"{topic!r} is not a topic name")
    if qos == 0 and (packet_id is not None or dup):
        raise ValueError("a QoS 0 PUBLISH has no packet identifier and no DUP flag")
    header = encode_string(topic, "topic")
    if qos:
        if packet_id is None:
            raise ValueError(f"a QoS {qos} PUBLISH needs a packet identifier")
        header += packet_id_bytes(packet_id)
    first = 0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    return frame(first, header + bytes(payload))


# --- PUBACK, PUBREC, PUBREL, PUBCOMP (3.4 - 3.7) ------------------------------------------


def parse_ack(body: bytes) -> int:
    """The packet identifier of a PUBACK, PUBREC, PUBREL or PUBCOMP (exactly two bytes)."""
    if len(body) != 2:
        raise _malformed(f"an acknowledgement is 2 bytes long, not {len(body)}")
    return read_packet_id(Reader(body), "acknowledgement")


def puback(packet_id: int) -> bytes:
    return b"\x40\x02" + packet_id_bytes(packet_id)


def pubrec(packet_id: int) -> bytes:
    return b"\x50\x02" + packet_id_bytes(packet_id)


def pubcomp(packet_id: int) -> bytes:
    return b"\x70\x02" + packet_id_bytes(packet_id)


# --- SUBSCRIBE / SUBACK, UNSUBSCRIBE / UNSUBACK (3.8 - 3.11) ------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    requests: list[tuple[str, int]]  # (topic filter, requested QoS)


def parse_subscribe(flags: int, body: bytes) -> Subscribe:
    """A SUBSCRIBE (flags 0010). Filter syntax is the broker's to judge, per filter."""
    if flags != 0b0010:
        raise _malformed(f"SUBSCRIBE fixed header flags must be 0010, not {flags:04b}")
    reader = Reader(body)
    packet_id = read_packet_id(reader, "SUBSCRIBE")
    requests: list[tuple[str, int]] = []
    while reader.remaining():
        topic_filter = reader.string("topic filter")
        qos = reader.byte("requested QoS")
        if qos > 2:  # QoS 3, or a reserved bit set [MQTT-3.8.3-4]
            raise _malformed(f"requested QoS byte {qos:#04x}")
        requests.append((topic_filter, qos))
    if not requests:
        raise _malformed("SUBSCRIBE without any topic filter")
    return Subscribe(packet_id, requests)


def suback(packet_id: int, codes: list[int]) -> bytes:
    """A SUBACK: granted QoS (0-2) or 0x80 (failure) per requested filter."""
    if not codes or any(code not in (0, 1, 2, SUBSCRIPTION_FAILURE) for code in codes):
        raise ValueError(f"{codes!r} are not SUBACK return codes")
    return frame(0x90, packet_id_bytes(packet_id) + bytes(codes))


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]


def parse_unsubscribe(flags: int, body: bytes) -> Unsubscribe:
    """An UNSUBSCRIBE (flags 0010), with at least one topic filter."""
    if flags != 0b0010:
        raise _malformed(f"UNSUBSCRIBE fixed header flags must be 0010, not {flags:04b}")
    reader = Reader(body)
    packet_id = read_packet_id(reader, "UNSUBSCRIBE")
    topic_filters: list[str] = []
    while reader.remaining():
        topic_filters.append(reader.string("topic filter"))
    if not topic_filters:
        raise _malformed("UNSUBSCRIBE without any topic filter")
    return Unsubscribe(packet_id, topic_filters)


def unsuback(packet_id: int) -> bytes:
    return b"\xb0\x02" + packet_id_bytes(packet_id)


# --- PINGREQ, PINGRESP, DISCONNECT (3.12 - 3.14) ------------------------------------------


def parse_empty(body: bytes, what: str) -> None:
    """A PINGREQ or DISCONNECT: no body at all."""
    if body:
        raise _malformed(f"a {what} has no body, this one has {len(body)} bytes")


def pingresp() -> bytes:
    return b"\xd0\x00"


# --- Any packet a client sends after its CONNECT ------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    kind: int  # PUBACK, PUBREC, PUBREL or PUBCOMP
    packet_id: int


@dataclass(frozen=True, slots=True)
class Empty:
    kind: int  # PINGREQ or DISCONNECT


Packet = Publish | Ack | Subscribe | Unsubscribe | Empty


def parse_packet(first: int, body: bytes) -> Packet:
    """A client's packet after its CONNECT from its first byte and body; ProtocolError if it
    is malformed or a packet a client does not send then (a second CONNECT, a CONNACK...)."""
    kind, flags = first >> 4, first & 0x0F
    if kind == PUBLISH:
        return parse_publish(flags, body)
    check_flags(kind, flags)  # reserved fixed header bits: the same table as MQTT 5's
    if kind in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        return Ack(kind, parse_ack(body))
    if kind == SUBSCRIBE:
        return parse_subscribe(flags, body)
    if kind == UNSUBSCRIBE:
        return parse_unsubscribe(flags, body)
    if kind in (PINGREQ, DISCONNECT):
        parse_empty(body, "PINGREQ" if kind == PINGREQ else "DISCONNECT")
        return Empty(kind)
    raise ProtocolError(PROTOCOL_ERROR, f"a client does not send packet type {kind} here")


def fixed_header(data: bytes, at: int = 0) -> tuple[int, int] | None:
    """(Remaining Length, offset of the body) of the packet starting at `at`, or None if the
    header is not all in `data` yet; ProtocolError(0x81) past four length bytes (2.2.3)."""
    length, shift = 0, 0
    for position in range(at + 1, min(at + 5, len(data))):
        digit = data[position]
        length |= (digit & 0x7F) << shift
        shift += 7
        if not digit & 0x80:
            return length, position + 1
    if len(data) - at > 4:
        raise _malformed("remaining length longer than four bytes")
    return None
