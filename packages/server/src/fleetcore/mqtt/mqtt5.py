"""MQTT 5.0 packet codec for the server side of the embedded broker (OASIS MQTT Version 5.0).

Pure and dependency-free: no sockets, no clocks, no session state. The ``parse_*`` functions
take a packet's body (every byte after the fixed header) and return a frozen dataclass; the
encoders take values and return a complete packet, fixed header included, ready to write.

Anything a peer could send wrong raises `ProtocolError`, whose ``reason`` is the reason code
the broker answers with (in the CONNACK while connecting, in a DISCONNECT afterwards). The
classification follows the specification's own words where it gives one:

- 0x81 Malformed Packet: lengths that do not add up, truncated fields, trailing bytes, a bad
  Variable Byte Integer (more than four bytes, or not minimally encoded [MQTT-1.5.5-1]),
  ill-formed UTF-8 or UTF-8 with U+0000 [MQTT-1.5.4-1/2], unknown property identifiers or
  ones not valid for the packet (2.2.2.2), invalid fixed header flags (2.1.3, e.g. SUBSCRIBE
  flags other than 0010), PUBLISH with QoS 3 [MQTT-3.3.1-4], will QoS 3 (3.1.2.6), the
  CONNECT reserved flag [MQTT-3.1.2-3], reserved subscription option bits [MQTT-3.8.3-5].
- 0x82 Protocol Error: a property that may appear once given twice ("It is a Protocol Error
  to include ... more than once"), property values out of range (Receive Maximum 0, a 0/1
  byte that is neither, Subscription Identifier 0, ...), will QoS or retain without the will
  flag, packet identifier 0 where one is required, DUP on QoS 0, PUBLISH topic with
  wildcards or empty without a Topic Alias, a Subscription Identifier in a client's PUBLISH
  [MQTT-3.3.4-6], subscription QoS 3 or Retain Handling 3, No Local on a shared
  subscription, SUBSCRIBE/UNSUBSCRIBE without any topic filter, Authentication Data
  without an Authentication Method.
- 0x84 Unsupported Protocol Version from `parse_connect` for a level other than 5,
  0x94 Topic Alias invalid for a Topic Alias of 0, 0x99 Payload format invalid for a will
  that claims to be UTF-8 and is not.

What needs connection state stays with the broker: Topic Alias Maximum and alias mappings,
Receive Maximum accounting, Maximum Packet Size, topic filter syntax (answered per filter in
the SUBACK with 0x8F), payload format validation of PUBLISH (answered with 0x99 in the
PUBACK), authorization.

Encoders raise plain ValueError for arguments that cannot make a valid packet (reason codes
the packet does not allow, packet identifier 0, properties not allowed in the packet): that
is a bug in the caller, never something a peer did.

The data types (Variable Byte Integer, strings, the `Reader` cursor, `frame`, packet
identifiers, `check_flags`) are shared with the MQTT 3.1.1 codec (fleetcore.mqtt.mqtt311).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

PROTOCOL_LEVEL = 5

# Property identifiers (2.2.2.2, Table 2-4).
PAYLOAD_FORMAT_INDICATOR = 0x01
MESSAGE_EXPIRY_INTERVAL = 0x02
CONTENT_TYPE = 0x03
RESPONSE_TOPIC = 0x08
CORRELATION_DATA = 0x09
SUBSCRIPTION_IDENTIFIER = 0x0B
SESSION_EXPIRY_INTERVAL = 0x11
ASSIGNED_CLIENT_IDENTIFIER = 0x12
SERVER_KEEP_ALIVE = 0x13
AUTHENTICATION_METHOD = 0x15
AUTHENTICATION_DATA = 0x16
REQUEST_PROBLEM_INFORMATION = 0x17
WILL_DELAY_INTERVAL = 0x18
REQUEST_RESPONSE_INFORMATION = 0x19
RESPONSE_INFORMATION = 0x1A
SERVER_REFERENCE = 0x1C
REASON_STRING = 0x1F
RECEIVE_MAXIMUM = 0x21
TOPIC_ALIAS_MAXIMUM = 0x22
TOPIC_ALIAS = 0x23
MAXIMUM_QOS = 0x24
RETAIN_AVAILABLE = 0x25
USER_PROPERTY = 0x26
MAXIMUM_PACKET_SIZE = 0x27
WILDCARD_SUBSCRIPTION_AVAILABLE = 0x28
SUBSCRIPTION_IDENTIFIER_AVAILABLE = 0x29
SHARED_SUBSCRIPTION_AVAILABLE = 0x2A

# Reason codes (2.4, Table 2-6).
SUCCESS = 0x00
NORMAL_DISCONNECTION = 0x00
GRANTED_QOS_0 = 0x00
GRANTED_QOS_1 = 0x01
GRANTED_QOS_2 = 0x02
DISCONNECT_WITH_WILL_MESSAGE = 0x04
NO_MATCHING_SUBSCRIBERS = 0x10
NO_SUBSCRIPTION_EXISTED = 0x11
CONTINUE_AUTHENTICATION = 0x18
RE_AUTHENTICATE = 0x19
UNSPECIFIED_ERROR = 0x80
MALFORMED_PACKET = 0x81
PROTOCOL_ERROR = 0x82
IMPLEMENTATION_SPECIFIC_ERROR = 0x83
UNSUPPORTED_PROTOCOL_VERSION = 0x84
CLIENT_IDENTIFIER_NOT_VALID = 0x85
BAD_USER_NAME_OR_PASSWORD = 0x86
NOT_AUTHORIZED = 0x87
SERVER_UNAVAILABLE = 0x88
SERVER_BUSY = 0x89
BANNED = 0x8A
SERVER_SHUTTING_DOWN = 0x8B
BAD_AUTHENTICATION_METHOD = 0x8C
KEEP_ALIVE_TIMEOUT = 0x8D
SESSION_TAKEN_OVER = 0x8E
TOPIC_FILTER_INVALID = 0x8F
TOPIC_NAME_INVALID = 0x90
PACKET_IDENTIFIER_IN_USE = 0x91
PACKET_IDENTIFIER_NOT_FOUND = 0x92
RECEIVE_MAXIMUM_EXCEEDED = 0x93
TOPIC_ALIAS_INVALID = 0x94
PACKET_TOO_LARGE = 0x95
MESSAGE_RATE_TOO_HIGH = 0x96
QUOTA_EXCEEDED = 0x97
ADMINISTRATIVE_ACTION = 0x98
PAYLOAD_FORMAT_INVALID = 0x99
RETAIN_NOT_SUPPORTED = 0x9A
QOS_NOT_SUPPORTED = 0x9B
USE_ANOTHER_SERVER = 0x9C
SERVER_MOVED = 0x9D
SHARED_SUBSCRIPTIONS_NOT_SUPPORTED = 0x9E
CONNECTION_RATE_EXCEEDED = 0x9F
MAXIMUM_CONNECT_TIME = 0xA0
SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED = 0xA1
WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED = 0xA2

MAX_VARINT = 268_435_455  # the largest Variable Byte Integer (1.5.5)

Properties = dict[int, Any]
"""Property id -> value. USER_PROPERTY maps to list[tuple[str, str]] (in order), and
SUBSCRIPTION_IDENTIFIER in an outgoing PUBLISH to list[int]; binary properties are bytes,
string ones str, integers int."""


class PacketType(IntEnum):
    """The control packet type: the high four bits of the fixed header's first byte."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14
    AUTH = 15


class ProtocolError(ValueError):
    """A packet the peer should not have sent; ``reason`` is the reason code to answer with."""

    def __init__(self, reason: int, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(MALFORMED_PACKET, message)


@dataclass(frozen=True, slots=True)
class ConnectFlags:
    """A CONNECT's flags byte (3.1.2.3 in both versions), checked."""

    clean: bool  # 3.1.1's Clean Session, MQTT 5's Clean Start
    will: bool
    will_qos: int
    will_retain: bool
    username: bool
    password: bool


def read_connect_flags(
    reader: Reader, *, stray_will_bits: Callable[[str], ProtocolError]
) -> ConnectFlags:
    """Read and check the flags byte: the same rules in 3.1.1 and MQTT 5, except what will
    QoS or retain without the will flag is, which the caller names (3.1.1: a malformed
    packet [MQTT-3.1.2-11]; MQTT 5: a protocol error)."""
    flags = reader.byte("connect flags")
    if flags & 0x01:
        raise _malformed("the reserved connect flag is set")
    will = bool(flags & 0x04)
    will_qos = (flags >> 3) & 0x03
    will_retain = bool(flags & 0x20)
    if will and will_qos == 3:
        raise _malformed("will QoS 3")
    if not will and (will_qos or will_retain):
        raise stray_will_bits("will QoS or will retain set without the will flag")
    return ConnectFlags(
        clean=bool(flags & 0x02),
        will=will,
        will_qos=will_qos,
        will_retain=will_retain,
        username=bool(flags & 0x80),
        password=bool(flags & 0x40),
    )


def _protocol(message: str) -> ProtocolError:
    return ProtocolError(PROTOCOL_ERROR, message)


# --- Data types (1.5) ---------------------------------------------------------------------


def encode_varint(value: int) -> bytes:
    """A Variable Byte Integer (1.5.5): 0 to 268,435,455 in one to four bytes."""
    if not 0 <= value <= MAX_VARINT:
        raise ValueError(f"{value} does not fit a variable byte integer (0 to {MAX_VARINT})")
    out = bytearray()
    while True:
        digit = value & 0x7F
        value >>= 7
        if value:
            out.append(digit | 0x80)
        else:
            out.append(digit)
            return bytes(out)


def _decode_varint(data: bytes, offset: int, end: int, what: str) -> tuple[int, int]:
    value = 0
    for index in range(4):
        position = offset + index
        if position >= end:
            raise _malformed(f"{what} is truncated")
        digit = data[position]
        value |= (digit & 0x7F) << (7 * index)
        if not digit & 0x80:
            if index and not digit:
                raise _malformed(f"{what} is not minimally encoded")
            return value, position + 1
    raise _malformed(f"{what} is longer than four bytes")


def decode_varint(data: bytes, offset: int = 0) -> tuple[int, int]:
    """(value, offset just past it) of the Variable Byte Integer at ``offset``; at most 4 bytes.

    Truncated, five-byte or non-minimal encodings raise ProtocolError(0x81).
    """
    if offset < 0:
        raise ValueError("offset must not be negative")
    return _decode_varint(data, offset, len(data), "variable byte integer")


def decode_utf8(raw: bytes, what: str) -> str:
    """Strict UTF-8 without U+0000 (1.5.4; 3.1.1 1.5.3), else ProtocolError(0x81)."""
    try:
        text = raw.decode("utf-8")  # strict: rejects overlongs and surrogates (1.5.4)
    except UnicodeDecodeError:
        raise _malformed(f"{what} is not well-formed UTF-8") from None
    if "\x00" in text:
        raise _malformed(f"{what} contains U+0000")
    return text


def encode_binary(data: bytes, what: str) -> bytes:
    """Two-byte length, then the bytes (Binary Data, 1.5.6)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ValueError(f"{what} must be bytes")
    if len(data) > 0xFFFF:
        raise ValueError(f"{what} is longer than 65,535 bytes")
    return struct.pack("!H", len(data)) + bytes(data)


def encode_string(text: str, what: str) -> bytes:
    """A UTF-8 Encoded String (1.5.4); ValueError for U+0000."""
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a str")
    if "\x00" in text:
        raise ValueError(f"{what} contains U+0000")
    try:
        raw = text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not encodable as UTF-8") from None
    return encode_binary(raw, what)


class Reader:
    """A cursor over ``data[pos:end]``; every overrun is a Malformed Packet."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = bytes(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def take(self, size: int, what: str) -> bytes:
        if size > self.end - self.pos:
            raise _malformed(f"{what} is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        value: int = struct.unpack("!H", self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = struct.unpack("!I", self.take(4, what))[0]
        return value

    def varint(self, what: str) -> int:
        value, self.pos = _decode_varint(self.data, self.pos, self.end, what)
        return value

    def binary(self, what: str) -> bytes:
        return self.take(self.u16(what), what)

    def string(self, what: str) -> str:
        return decode_utf8(self.binary(what), what)

    def rest(self) -> bytes:
        chunk = self.data[self.pos : self.end]
        self.pos = self.end
        return chunk

    def expect_end(self, what: str) -> None:
        if self.pos != self.end:
            raise _malformed(f"{self.end - self.pos} unexpected bytes after {what}")


# --- Properties (2.2.2) -------------------------------------------------------------------

_BYTE, _U16, _U32, _VARINT, _STRING, _BINARY, _PAIR = range(7)

_PROPERTIES: dict[int, tuple[str, int]] = {
    PAYLOAD_FORMAT_INDICATOR: ("Payload Format Indicator", _BYTE),
    MESSAGE_EXPIRY_INTERVAL: ("Message Expiry Interval", _U32),
    CONTENT_TYPE: ("Content Type", _STRING),
    RESPONSE_TOPIC: ("Response Topic", _STRING),
    CORRELATION_DATA: ("Correlation Data", _BINARY),
    SUBSCRIPTION_IDENTIFIER: ("Subscription Identifier", _VARINT),
    SESSION_EXPIRY_INTERVAL: ("Session Expiry Interval", _U32),
    ASSIGNED_CLIENT_IDENTIFIER: ("Assigned Client Identifier", _STRING),
    SERVER_KEEP_ALIVE: ("Server Keep Alive", _U16),
    AUTHENTICATION_METHOD: ("Authentication Method", _STRING),
    AUTHENTICATION_DATA: ("Authentication Data", _BINARY),
    REQUEST_PROBLEM_INFORMATION: ("Request Problem Information", _BYTE),
    WILL_DELAY_INTERVAL: ("Will Delay Interval", _U32),
    REQUEST_RESPONSE_INFORMATION: ("Request Response Information", _BYTE),
    RESPONSE_INFORMATION: ("Response Information", _STRING),
    SERVER_REFERENCE: ("Server Reference", _STRING),
    REASON_STRING: ("Reason String", _STRING),
    RECEIVE_MAXIMUM: ("Receive Maximum", _U16),
    TOPIC_ALIAS_MAXIMUM: ("Topic Alias Maximum", _U16),
    TOPIC_ALIAS: ("Topic Alias", _U16),
    MAXIMUM_QOS: ("Maximum QoS", _BYTE),
    RETAIN_AVAILABLE: ("Retain Available", _BYTE),
    USER_PROPERTY: ("User Property", _PAIR),
    MAXIMUM_PACKET_SIZE: ("Maximum Packet Size", _U32),
    WILDCARD_SUBSCRIPTION_AVAILABLE: ("Wildcard Subscription Available", _BYTE),
    SUBSCRIPTION_IDENTIFIER_AVAILABLE: ("Subscription Identifier Available", _BYTE),
    SHARED_SUBSCRIPTION_AVAILABLE: ("Shared Subscription Available", _BYTE),
}

# Where each property may appear (Table 2-4); the keys double as names in messages.
_CONNECT = "CONNECT"
_WILL = "will properties"
_CONNACK = "CONNACK"
_PUBLISH = "PUBLISH"
_ACK = "PUBACK/PUBREC/PUBREL/PUBCOMP"
_SUBSCRIBE = "SUBSCRIBE"
_SUBACK = "SUBACK"
_UNSUBSCRIBE = "UNSUBSCRIBE"
_UNSUBACK = "UNSUBACK"
_DISCONNECT = "DISCONNECT"

_ALLOWED: dict[str, frozenset[int]] = {
    _CONNECT: frozenset(
        {
            SESSION_EXPIRY_INTERVAL,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            REQUEST_PROBLEM_INFORMATION,
            REQUEST_RESPONSE_INFORMATION,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
        }
    ),
    _WILL: frozenset(
        {
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            WILL_DELAY_INTERVAL,
            USER_PROPERTY,
        }
    ),
    _CONNACK: frozenset(
        {
            SESSION_EXPIRY_INTERVAL,
            ASSIGNED_CLIENT_IDENTIFIER,
            SERVER_KEEP_ALIVE,
            AUTHENTICATION_METHOD,
            AUTHENTICATION_DATA,
            RESPONSE_INFORMATION,
            SERVER_REFERENCE,
            REASON_STRING,
            RECEIVE_MAXIMUM,
            TOPIC_ALIAS_MAXIMUM,
            MAXIMUM_QOS,
            RETAIN_AVAILABLE,
            USER_PROPERTY,
            MAXIMUM_PACKET_SIZE,
            WILDCARD_SUBSCRIPTION_AVAILABLE,
            SUBSCRIPTION_IDENTIFIER_AVAILABLE,
            SHARED_SUBSCRIPTION_AVAILABLE,
        }
    ),
    _PUBLISH: frozenset(
        {
            PAYLOAD_FORMAT_INDICATOR,
            MESSAGE_EXPIRY_INTERVAL,
            CONTENT_TYPE,
            RESPONSE_TOPIC,
            CORRELATION_DATA,
            SUBSCRIPTION_IDENTIFIER,
            TOPIC_ALIAS,
            USER_PROPERTY,
        }
    ),
    _ACK: frozenset({REASON_STRING, USER_PROPERTY}),
    _SUBSCRIBE: frozenset({SUBSCRIPTION_IDENTIFIER, USER_PROPERTY}),
    _SUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    _UNSUBSCRIBE: frozenset({USER_PROPERTY}),
    _UNSUBACK: frozenset({REASON_STRING, USER_PROPERTY}),
    _DISCONNECT: frozenset(
        {SESSION_EXPIRY_INTERVAL, SERVER_REFERENCE, REASON_STRING, USER_PROPERTY}
    ),
}

# Byte properties whose only values are 0 and 1, and integers that must not be 0.
_ZERO_OR_ONE = frozenset(
    {
        PAYLOAD_FORMAT_INDICATOR,
        REQUEST_PROBLEM_INFORMATION,
        REQUEST_RESPONSE_INFORMATION,
        MAXIMUM_QOS,
        RETAIN_AVAILABLE,
        WILDCARD_SUBSCRIPTION_AVAILABLE,
        SUBSCRIPTION_IDENTIFIER_AVAILABLE,
        SHARED_SUBSCRIPTION_AVAILABLE,
    }
)
_NOT_ZERO = frozenset({RECEIVE_MAXIMUM, MAXIMUM_PACKET_SIZE, SUBSCRIPTION_IDENTIFIER, TOPIC_ALIAS})


def _value_problem(ident: int, value: Any) -> str | None:
    """What is wrong with a well-typed property value, if anything."""
    name = _PROPERTIES[ident][0]
    if ident in _ZERO_OR_ONE and value not in (0, 1):
        return f"{name} must be 0 or 1, not {value}"
    if ident in _NOT_ZERO and value == 0:
        return f"{name} must not be 0"
    if ident == RESPONSE_TOPIC and _has_wildcard(value):
        return f"{name} {value!r} contains a wildcard"
    return None


def _read_value(reader: Reader, kind: int, name: str) -> Any:
    if kind == _BYTE:
        return reader.byte(name)
    if kind == _U16:
        return reader.u16(name)
    if kind == _U32:
        return reader.u32(name)
    if kind == _VARINT:
        return reader.varint(name)
    if kind == _STRING:
        return reader.string(name)
    if kind == _BINARY:
        return reader.binary(name)
    return (reader.string(f"{name} name"), reader.string(f"{name} value"))


def _read_properties(reader: Reader, packet: str) -> Properties:
    length = reader.varint(f"{packet} property length")
    if length > reader.remaining():
        raise _malformed(
            f"{packet} property length {length} exceeds the {reader.remaining()} bytes left"
        )
    end = reader.pos + length
    inner = Reader(reader.data, reader.pos, end)
    allowed = _ALLOWED[packet]
    properties: Properties = {}
    while inner.remaining():
        ident = inner.varint("property identifier")
        known = _PROPERTIES.get(ident)
        if known is None:
            raise _malformed(f"unknown property identifier 0x{ident:02X} in {packet}")
        name, kind = known
        if ident not in allowed:
            raise _malformed(f"{name} is not allowed in {packet}")
        value = _read_value(inner, kind, name)
        problem = _value_problem(ident, value)
        if problem is not None:
            reason = TOPIC_ALIAS_INVALID if ident == TOPIC_ALIAS else PROTOCOL_ERROR
            raise ProtocolError(reason, problem)
        if ident == USER_PROPERTY:
            properties.setdefault(USER_PROPERTY, []).append(value)
        elif ident in properties:
            raise _protocol(f"{name} appears more than once in {packet}")
        else:
            properties[ident] = value
    reader.pos = end
    return properties


def _encode_value(ident: int, value: Any) -> bytes:
    name, kind = _PROPERTIES[ident]
    if kind == _PAIR:
        if not isinstance(value, tuple | list) or len(value) != 2:
            raise ValueError(f"each {name} must be a (name, value) pair, not {value!r}")
        return encode_string(value[0], f"{name} name") + encode_string(value[1], f"{name} value")
    if kind == _STRING:
        encoded = encode_string(value, name)
    elif kind == _BINARY:
        encoded = encode_binary(value, name)
    else:
        limit = {_BYTE: 0xFF, _U16: 0xFFFF, _U32: 0xFFFF_FFFF, _VARINT: MAX_VARINT}[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit:
            raise ValueError(f"{name} must be an int from 0 to {limit}, not {value!r}")
        if kind == _BYTE:
            encoded = bytes([value])
        elif kind == _U16:
            encoded = struct.pack("!H", value)
        elif kind == _U32:
            encoded = struct.pack("!I", value)
        else:
            encoded = encode_varint(value)
    problem = _value_problem(ident, value)
    if problem is not None:
        raise ValueError(problem)
    return encoded


def _encode_properties(properties: Properties | None, packet: str) -> bytes:
    out = bytearray()
    for ident, value in (properties or {}).items():
        known = _PROPERTIES.get(ident)
        if known is None:
            raise ValueError(f"unknown property identifier {ident!r}")
        if ident not in _ALLOWED[packet]:
            raise ValueError(f"{known[0]} is not allowed in {packet}")
        repeated = ident == USER_PROPERTY or (
            ident == SUBSCRIPTION_IDENTIFIER and packet == _PUBLISH
        )
        values: Iterable[Any]
        if repeated and isinstance(value, list):
            values = value
        elif ident == USER_PROPERTY:
            raise ValueError(f"{known[0]} must be a list of (name, value) pairs")
        else:
            values = (value,)
        for item in values:
            out += encode_varint(ident) + _encode_value(ident, item)
    return encode_varint(len(out)) + bytes(out)


# --- Shared helpers -----------------------------------------------------------------------


def _has_wildcard(topic: str) -> bool:
    return "+" in topic or "#" in topic


def frame(first_byte: int, body: bytes) -> bytes:
    """A whole packet: the first byte, the Remaining Length, the body."""
    if len(body) > MAX_VARINT:
        raise ValueError(f"a packet body of {len(body)} bytes exceeds the MQTT maximum")
    return bytes([first_byte]) + encode_varint(len(body)) + body


def packet_id_bytes(packet_id: int) -> bytes:
    """A packet identifier (1 to 65535) as two bytes."""
    if (
        isinstance(packet_id, bool)
        or not isinstance(packet_id, int)
        or not 1 <= packet_id <= 0xFFFF
    ):
        raise ValueError(f"packet identifier must be 1 to 65535, not {packet_id!r}")
    return struct.pack("!H", packet_id)


def read_packet_id(reader: Reader, packet: str) -> int:
    """A non-zero packet identifier, else ProtocolError(0x82)."""
    packet_id = reader.u16(f"{packet} packet identifier")
    if packet_id == 0:
        raise _protocol(f"{packet} packet identifier must not be 0")
    return packet_id


def _check_reason(reason: int, allowed: frozenset[int], packet: str) -> None:
    if reason not in allowed:
        raise ValueError(f"{reason!r} is not a {packet} reason code")


# Fixed header flags other than 0000 (Table 2-2); PUBLISH flags are checked on their own.
_EXPECTED_FLAGS = {
    PacketType.PUBREL: 0b0010,
    PacketType.SUBSCRIBE: 0b0010,
    PacketType.UNSUBSCRIBE: 0b0010,
}


def check_flags(packet_type: int, flags: int) -> None:
    """Validate a fixed header (2.1.2, 2.1.3) given its packet type and low four bits.

    For the parsers that do not take the flags themselves (PUBACK family, DISCONNECT, ...):
    reserved bits must hold the listed values, else it is a Malformed Packet.
    """
    if not 0 <= flags <= 0x0F:
        raise ValueError("flags are the low four bits of the first byte")
    if not 1 <= packet_type <= 15:
        raise _malformed(f"packet type {packet_type} is reserved")
    kind = PacketType(packet_type)
    if kind == PacketType.PUBLISH:
        if flags & 0b0110 == 0b0110:
            raise _malformed("PUBLISH with QoS 3")
        return
    expected = _EXPECTED_FLAGS.get(kind, 0)
    if flags != expected:
        raise _malformed(f"{kind.name} fixed header flags must be {expected:04b}, not {flags:04b}")


# --- CONNECT / CONNACK (3.1, 3.2) ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Will:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: Properties


@dataclass(frozen=True, slots=True)
class Connect:
    client_id: str
    clean_start: bool
    keep_alive: int
    username: str | None
    password: bytes | None
    will: Will | None
    properties: Properties

    @property
    def session_expiry(self) -> int:
        """Session Expiry Interval in seconds; absent means 0 (the session ends with the
        connection), 0xFFFFFFFF means it never expires."""
        return int(self.properties.get(SESSION_EXPIRY_INTERVAL, 0))

    @property
    def receive_maximum(self) -> int:
        """How many QoS 1/2 PUBLISH packets the client takes unacknowledged; default 65535."""
        return int(self.properties.get(RECEIVE_MAXIMUM, 65535))

    @property
    def maximum_packet_size(self) -> int | None:
        """The largest packet the client accepts, or None for no limit."""
        value = self.properties.get(MAXIMUM_PACKET_SIZE)
        return None if value is None else int(value)


_PROTOCOL_NAME = b"\x00\x04MQTT"


def protocol_level(body: bytes) -> int:
    """From a CONNECT's body (bytes after the fixed header): the protocol level byte (4 for
    3.1.1, 5 for 5.0); ProtocolError(0x81) if the body is too short or the protocol name is
    not 'MQTT'."""
    if len(body) < len(_PROTOCOL_NAME) + 1:
        raise _malformed("CONNECT is too short for a protocol name and level")
    if body[: len(_PROTOCOL_NAME)] != _PROTOCOL_NAME:
        raise _malformed("CONNECT protocol name is not MQTT")
    return body[len(_PROTOCOL_NAME)]


def _check_topic_name(topic: str, what: str) -> None:
    if _has_wildcard(topic):
        raise _protocol(f"{what} {topic!r} contains a wildcard")


def parse_connect(body: bytes) -> Connect:
    """A CONNECT's body (everything after the fixed header), protocol level 5 only.

    Other levels raise ProtocolError(0x84 Unsupported Protocol Version).
    """
    level = protocol_level(body)
    if level != PROTOCOL_LEVEL:
        raise ProtocolError(UNSUPPORTED_PROTOCOL_VERSION, f"protocol level {level} is not 5")
    reader = Reader(body, len(_PROTOCOL_NAME) + 1)
    flags = read_connect_flags(reader, stray_will_bits=_protocol)
    keep_alive = reader.u16("keep alive")
    properties = _read_properties(reader, _CONNECT)
    if AUTHENTICATION_DATA in properties and AUTHENTICATION_METHOD not in properties:
        raise _protocol("Authentication Data without an Authentication Method")
    client_id = reader.string("client identifier")
    will = None
    if flags.will:
        will_properties = _read_properties(reader, _WILL)
        topic = reader.string("will topic")
        if not topic:
            raise _protocol("empty will topic")
        _check_topic_name(topic, "will topic")
        payload = reader.binary("will payload")
        if will_properties.get(PAYLOAD_FORMAT_INDICATOR) == 1:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(
                    PAYLOAD_FORMAT_INVALID, "will payload is marked UTF-8 but is not"
                ) from None
        will = Will(topic, payload, flags.will_qos, flags.will_retain, will_properties)
    username = reader.string("user name") if flags.username else None
    password = reader.binary("password") if flags.password else None
    reader.expect_end("the CONNECT payload")
    return Connect(
        client_id=client_id,
        clean_start=flags.clean,
        keep_alive=keep_alive,
        username=username,
        password=password,
        will=will,
        properties=properties,
    )


_CONNACK_REASONS = frozenset(
    {
        SUCCESS,
        UNSPECIFIED_ERROR,
        MALFORMED_PACKET,
        PROTOCOL_ERROR,
        IMPLEMENTATION_SPECIFIC_ERROR,
        UNSUPPORTED_PROTOCOL_VERSION,
        CLIENT_IDENTIFIER_NOT_VALID,
        BAD_USER_NAME_OR_PASSWORD,
        NOT_AUTHORIZED,
        SERVER_UNAVAILABLE,
        SERVER_BUSY,
        BANNED,
        BAD_AUTHENTICATION_METHOD,
        TOPIC_NAME_INVALID,
        PACKET_TOO_LARGE,
        QUOTA_EXCEEDED,
        PAYLOAD_FORMAT_INVALID,
        RETAIN_NOT_SUPPORTED,
        QOS_NOT_SUPPORTED,
        USE_ANOTHER_SERVER,
        SERVER_MOVED,
        CONNECTION_RATE_EXCEEDED,
    }
)


def connack(session_present: bool, reason: int, properties: Properties | None = None) -> bytes:
    """A CONNACK; Session Present must be 0 with a non-zero reason [MQTT-3.2.2-6]."""
    _check_reason(reason, _CONNACK_REASONS, "CONNACK")
    if session_present and reason != SUCCESS:
        raise ValueError("Session Present must be 0 when the CONNACK refuses the connection")
    body = bytes([1 if session_present else 0, reason]) + _encode_properties(properties, _CONNACK)
    return frame(0x20, body)


# --- PUBLISH (3.3) ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    dup: bool
    packet_id: int | None
    properties: Properties


def parse_publish(flags: int, body: bytes) -> Publish:
    """A client's PUBLISH: ``flags`` are the low four bits of the fixed header's first byte.

    An empty topic with a Topic Alias is returned as is: resolving aliases needs the
    connection's mapping, which is the broker's.
    """
    if not 0 <= flags <= 0x0F:
        raise ValueError("flags are the low four bits of the first byte")
    qos = (flags >> 1) & 0x03
    if qos == 3:
        raise _malformed("PUBLISH with QoS 3")
    dup = bool(flags & 0x08)
    if dup and qos == 0:
        raise _protocol("DUP flag set on a QoS 0 PUBLISH")
    reader = Reader(body)
    topic = reader.string("topic name")
    packet_id = read_packet_id(reader, "PUBLISH") if qos else None
    properties = _read_properties(reader, _PUBLISH)
    if SUBSCRIPTION_IDENTIFIER in properties:
        raise _protocol("a PUBLISH from a client must not carry a Subscription Identifier")
    _check_topic_name(topic, "PUBLISH topic")
    if not topic and TOPIC_ALIAS not in properties:
        raise _protocol("PUBLISH with an empty topic and no Topic Alias")
    return Publish(
        topic=topic,
        payload=reader.rest(),
        qos=qos,
        retain=bool(flags & 0x01),
        dup=dup,
        packet_id=packet_id,
        properties=properties,
    )


def publish(
    topic: str,
    payload: bytes,
    *,
    qos: int = 0,
    packet_id: int | None = None,
    retain: bool = False,
    dup: bool = False,
    properties: Properties | None = None,
) -> bytes:
    """A PUBLISH to a client. SUBSCRIPTION_IDENTIFIER may be an int or a list of them."""
    if qos not in (0, 1, 2):
        raise ValueError(f"QoS must be 0, 1 or 2, not {qos!r}")
    if _has_wildcard(topic):
        raise ValueError(f"topic {topic!r} contains a wildcard")
    if not topic and TOPIC_ALIAS not in (properties or {}):
        raise ValueError("an empty topic needs a Topic Alias")
    if qos == 0 and (packet_id is not None or dup):
        raise ValueError("a QoS 0 PUBLISH has no packet identifier and no DUP flag")
    header = encode_string(topic, "topic")
    if qos:
        if packet_id is None:
            raise ValueError(f"a QoS {qos} PUBLISH needs a packet identifier")
        header += packet_id_bytes(packet_id)
    body = header + _encode_properties(properties, _PUBLISH) + bytes(payload)
    return frame(0x30 | (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0), body)


# --- PUBACK, PUBREC, PUBREL, PUBCOMP (3.4 - 3.7) ------------------------------------------


@dataclass(frozen=True, slots=True)
class Ack:
    packet_id: int
    reason: int
    properties: Properties


def parse_ack(body: bytes) -> Ack:
    """A PUBACK, PUBREC, PUBREL or PUBCOMP body (check the fixed header with `check_flags`).

    Remaining length 2 means reason 0 and no properties; 3 means no properties.
    """
    reader = Reader(body)
    packet_id = read_packet_id(reader, "acknowledgement")
    reason = reader.byte("reason code") if reader.remaining() else SUCCESS
    properties = _read_properties(reader, _ACK) if reader.remaining() else {}
    reader.expect_end("the acknowledgement properties")
    return Ack(packet_id, reason, properties)


_PUBACK_REASONS = frozenset(
    {
        SUCCESS,
        NO_MATCHING_SUBSCRIBERS,
        UNSPECIFIED_ERROR,
        IMPLEMENTATION_SPECIFIC_ERROR,
        NOT_AUTHORIZED,
        TOPIC_NAME_INVALID,
        PACKET_IDENTIFIER_IN_USE,
        QUOTA_EXCEEDED,
        PAYLOAD_FORMAT_INVALID,
    }
)
_PUBREL_REASONS = frozenset({SUCCESS, PACKET_IDENTIFIER_NOT_FOUND})


def _ack(
    first_byte: int,
    name: str,
    packet_id: int,
    reason: int,
    allowed: frozenset[int],
    reason_string: str | None = None,
) -> bytes:
    body = packet_id_bytes(packet_id)
    _check_reason(reason, allowed, name)
    if reason_string is not None:
        body += bytes([reason]) + _encode_properties({REASON_STRING: reason_string}, _ACK)
    elif reason != SUCCESS:
        body += bytes([reason])
    return frame(first_byte, body)


def puback(packet_id: int, reason: int = 0, reason_string: str | None = None) -> bytes:
    """A PUBACK; the two-byte short form when the reason is 0 and there is no reason string."""
    return _ack(0x40, "PUBACK", packet_id, reason, _PUBACK_REASONS, reason_string)


def pubrec(packet_id: int, reason: int = 0) -> bytes:
    return _ack(0x50, "PUBREC", packet_id, reason, _PUBACK_REASONS)


def pubrel(packet_id: int, reason: int = 0) -> bytes:
    return _ack(0x62, "PUBREL", packet_id, reason, _PUBREL_REASONS)


def pubcomp(packet_id: int, reason: int = 0) -> bytes:
    return _ack(0x70, "PUBCOMP", packet_id, reason, _PUBREL_REASONS)


# --- SUBSCRIBE / SUBACK (3.8, 3.9) --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionRequest:
    topic_filter: str
    qos: int
    no_local: bool
    retain_as_published: bool
    retain_handling: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    packet_id: int
    requests: list[SubscriptionRequest]
    properties: Properties


def parse_subscribe(flags: int, body: bytes) -> Subscribe:
    """A SUBSCRIBE (flags must be 0010). Topic filter syntax is not checked here: an invalid
    filter is answered per filter in the SUBACK (0x8F), not by closing the connection."""
    if flags != 0b0010:
        raise _malformed(f"SUBSCRIBE fixed header flags must be 0010, not {flags:04b}")
    reader = Reader(body)
    packet_id = read_packet_id(reader, "SUBSCRIBE")
    properties = _read_properties(reader, _SUBSCRIBE)
    requests: list[SubscriptionRequest] = []
    while reader.remaining():
        topic_filter = reader.string("topic filter")
        options = reader.byte("subscription options")
        if options & 0xC0:
            raise _malformed("reserved subscription option bits are set")
        qos = options & 0x03
        if qos == 3:
            raise _protocol(f"subscription to {topic_filter!r} asks for QoS 3")
        retain_handling = (options >> 4) & 0x03
        if retain_handling == 3:
            raise _protocol(f"subscription to {topic_filter!r} has Retain Handling 3")
        no_local = bool(options & 0x04)
        if no_local and topic_filter.startswith("$share/"):
            raise _protocol(f"No Local on the shared subscription {topic_filter!r}")
        requests.append(
            SubscriptionRequest(
                topic_filter=topic_filter,
                qos=qos,
                no_local=no_local,
                retain_as_published=bool(options & 0x08),
                retain_handling=retain_handling,
            )
        )
    if not requests:
        raise _protocol("SUBSCRIBE without any topic filter")
    return Subscribe(packet_id, requests, properties)


_SUBACK_REASONS = frozenset(
    {
        GRANTED_QOS_0,
        GRANTED_QOS_1,
        GRANTED_QOS_2,
        UNSPECIFIED_ERROR,
        IMPLEMENTATION_SPECIFIC_ERROR,
        NOT_AUTHORIZED,
        TOPIC_FILTER_INVALID,
        PACKET_IDENTIFIER_IN_USE,
        QUOTA_EXCEEDED,
        SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
        SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
        WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    }
)


def _reason_list(packet_id: int, reasons: list[int], allowed: frozenset[int], name: str) -> bytes:
    body = packet_id_bytes(packet_id)
    if not reasons:
        raise ValueError(f"a {name} needs one reason code per topic filter")
    for reason in reasons:
        _check_reason(reason, allowed, name)
    return body + b"\x00" + bytes(reasons)


def suback(packet_id: int, reasons: list[int]) -> bytes:
    """A SUBACK: one reason code (granted QoS or failure) per requested topic filter."""
    return frame(0x90, _reason_list(packet_id, reasons, _SUBACK_REASONS, "SUBACK"))


# --- UNSUBSCRIBE / UNSUBACK (3.10, 3.11) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    packet_id: int
    topic_filters: list[str]
    properties: Properties


def parse_unsubscribe(flags: int, body: bytes) -> Unsubscribe:
    """An UNSUBSCRIBE (flags must be 0010), with at least one topic filter."""
    if flags != 0b0010:
        raise _malformed(f"UNSUBSCRIBE fixed header flags must be 0010, not {flags:04b}")
    reader = Reader(body)
    packet_id = read_packet_id(reader, "UNSUBSCRIBE")
    properties = _read_properties(reader, _UNSUBSCRIBE)
    topic_filters: list[str] = []
    while reader.remaining():
        topic_filters.append(reader.string("topic filter"))
    if not topic_filters:
        raise _protocol("UNSUBSCRIBE without any topic filter")
    return Unsubscribe(packet_id, topic_filters, properties)


_UNSUBACK_REASONS = frozenset(
    {
        SUCCESS,
        NO_SUBSCRIPTION_EXISTED,
        UNSPECIFIED_ERROR,
        IMPLEMENTATION_SPECIFIC_ERROR,
        NOT_AUTHORIZED,
        TOPIC_FILTER_INVALID,
        PACKET_IDENTIFIER_IN_USE,
    }
)


def unsuback(packet_id: int, reasons: list[int]) -> bytes:
    """An UNSUBACK: one reason code per topic filter of the UNSUBSCRIBE."""
    return frame(0xB0, _reason_list(packet_id, reasons, _UNSUBACK_REASONS, "UNSUBACK"))


# --- DISCONNECT, PINGRESP (3.14, 3.13) ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Disconnect:
    reason: int
    properties: Properties


def parse_disconnect(body: bytes) -> Disconnect:
    """A client's DISCONNECT body; empty means 0x00 Normal disconnection."""
    reader = Reader(body)
    reason = reader.byte("reason code") if reader.remaining() else NORMAL_DISCONNECTION
    properties = _read_properties(reader, _DISCONNECT) if reader.remaining() else {}
    reader.expect_end("the DISCONNECT properties")
    return Disconnect(reason, properties)


# Table 3-10 without 0x04, which only a client sends.
_DISCONNECT_REASONS = frozenset(
    {
        NORMAL_DISCONNECTION,
        UNSPECIFIED_ERROR,
        MALFORMED_PACKET,
        PROTOCOL_ERROR,
        IMPLEMENTATION_SPECIFIC_ERROR,
        NOT_AUTHORIZED,
        SERVER_BUSY,
        SERVER_SHUTTING_DOWN,
        BAD_AUTHENTICATION_METHOD,
        KEEP_ALIVE_TIMEOUT,
        SESSION_TAKEN_OVER,
        TOPIC_FILTER_INVALID,
        TOPIC_NAME_INVALID,
        RECEIVE_MAXIMUM_EXCEEDED,
        TOPIC_ALIAS_INVALID,
        PACKET_TOO_LARGE,
        MESSAGE_RATE_TOO_HIGH,
        QUOTA_EXCEEDED,
        ADMINISTRATIVE_ACTION,
        PAYLOAD_FORMAT_INVALID,
        RETAIN_NOT_SUPPORTED,
        QOS_NOT_SUPPORTED,
        USE_ANOTHER_SERVER,
        SERVER_MOVED,
        SHARED_SUBSCRIPTIONS_NOT_SUPPORTED,
        CONNECTION_RATE_EXCEEDED,
        MAXIMUM_CONNECT_TIME,
        SUBSCRIPTION_IDENTIFIERS_NOT_SUPPORTED,
        WILDCARD_SUBSCRIPTIONS_NOT_SUPPORTED,
    }
)


def disconnect(reason: int = 0, reason_string: str | None = None) -> bytes:
    """A DISCONNECT from the server; remaining length 0 for a plain normal disconnection."""
    _check_reason(reason, _DISCONNECT_REASONS, "server DISCONNECT")
    if reason_string is not None:
        body = bytes([reason]) + _encode_properties({REASON_STRING: reason_string}, _DISCONNECT)
    elif reason != NORMAL_DISCONNECTION:
        body = bytes([reason])
    else:
        body = b""
    return frame(0xE0, body)


def pingresp() -> bytes:
    return b"\xd0\x00"
