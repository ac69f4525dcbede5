"""Hypothesis strategies for MQTT packets: valid ones built from values, then mutated.

The builders here are written from the specification, independently of our codec: a valid
packet and the values it was built from let a test check that parsing gives them back, and
the same packet with a byte flipped, a length changed, a property id swapped or a cut
anywhere shows what parsing does with what a broken or hostile client sends.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.support.mqtt_raw import varint

MAX_VARINT = 268_435_455


def u16(value: int) -> bytes:
    return struct.pack("!H", value)


def binary(data: bytes) -> bytes:
    return u16(len(data)) + data


def string(text: str) -> bytes:
    return binary(text.encode("utf-8"))


def frame(first_byte: int, body: bytes) -> bytes:
    """A whole packet: the fixed header and the body."""
    return bytes([first_byte]) + varint(len(body)) + body


def hello(version: int, client_id: str, username: str, password: str) -> bytes:
    """A valid CONNECT (clean, keep-alive 60 s) of MQTT 3.1.1 (4) or 5."""
    properties = b"\x00" if version == 5 else b""
    variable = string("MQTT") + bytes([version, 0xC2]) + u16(60) + properties
    return frame(0x10, variable + string(client_id) + string(username) + string(password))


# --- MQTT 5 properties (Table 2-4) -------------------------------------------------------

BYTE, U16, U32, VARINT, STRING, BINARY, PAIR = range(7)
PROPERTY_TYPES = {
    0x01: BYTE, 0x02: U32, 0x03: STRING, 0x08: STRING, 0x09: BINARY, 0x0B: VARINT,
    0x11: U32, 0x12: STRING, 0x13: U16, 0x15: STRING, 0x16: BINARY, 0x17: BYTE,
    0x18: U32, 0x19: BYTE, 0x1A: STRING, 0x1C: STRING, 0x1F: STRING, 0x21: U16,
    0x22: U16, 0x23: U16, 0x24: BYTE, 0x25: BYTE, 0x26: PAIR, 0x27: U32, 0x28: BYTE,
    0x29: BYTE, 0x2A: BYTE,
}  # fmt: skip
USER_PROPERTY = 0x26
ZERO_OR_ONE = {0x01, 0x17, 0x19, 0x24, 0x25, 0x28, 0x29, 0x2A}
NOT_ZERO = {0x0B, 0x21, 0x23, 0x27}
CONNECT_PROPERTIES = (0x11, 0x15, 0x16, 0x17, 0x19, 0x21, 0x22, 0x27)
WILL_PROPERTIES = (0x01, 0x02, 0x03, 0x08, 0x09, 0x18)
PUBLISH_PROPERTIES = (0x01, 0x02, 0x03, 0x08, 0x09)  # a Topic Alias is drawn on its own
ACK_PROPERTIES = (0x1F,)
SUBSCRIBE_PROPERTIES = (0x0B,)
DISCONNECT_PROPERTIES = (0x11, 0x1C, 0x1F)

# Text an MQTT 5 string may hold: any character but U+0000 and surrogates.
texts = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12)
topic_names = texts.filter(lambda t: t and "+" not in t and "#" not in t)


def _value(ident: int) -> st.SearchStrategy[Any]:
    kind = PROPERTY_TYPES[ident]
    low = 1 if ident in NOT_ZERO else 0
    if kind == BYTE:
        return st.integers(0, 1) if ident in ZERO_OR_ONE else st.integers(0, 255)
    if kind in (U16, U32, VARINT):
        high = {U16: 0xFFFF, U32: 0xFFFF_FFFF, VARINT: MAX_VARINT}[kind]
        return st.integers(low, high)
    if kind == STRING:
        return topic_names if ident == 0x08 else texts
    return st.binary(max_size=12)


def encode_value(ident: int, value: Any) -> bytes:
    kind = PROPERTY_TYPES[ident]
    if kind == BYTE:
        return bytes([value])
    if kind == U16:
        return u16(value)
    if kind == U32:
        return struct.pack("!I", value)
    if kind == VARINT:
        return varint(value)
    if kind == STRING:
        return string(value)
    if kind == BINARY:
        return binary(value)
    return string(value[0]) + string(value[1])


@dataclass(frozen=True)
class Built:
    """A packet body and what a parser should make of it."""

    body: bytes
    expected: dict[str, Any]
    flags: int = 0


@st.composite
def properties(draw: st.DrawFn, allowed: tuple[int, ...]) -> tuple[bytes, dict[int, Any]]:
    """A property block (length included) and the dict a parser should return."""
    chosen = draw(st.sets(st.sampled_from(allowed), max_size=len(allowed))) if allowed else set()
    values = {ident: draw(_value(ident)) for ident in sorted(chosen)}
    if 0x16 in values and 0x15 not in values:  # Authentication Data needs a Method
        values[0x15] = draw(texts)
    pairs = draw(st.lists(st.tuples(texts, texts), max_size=2))
    encoded = [(ident, value) for ident, value in values.items()]
    encoded += [(USER_PROPERTY, pair) for pair in pairs]
    encoded = draw(st.permutations(encoded)) if encoded else []
    block = b"".join(varint(ident) + encode_value(ident, value) for ident, value in encoded)
    expected: dict[int, Any] = dict(values)
    if pairs:
        expected[USER_PROPERTY] = [pair for ident, pair in encoded if ident == USER_PROPERTY]
    return varint(len(block)) + block, expected


# --- MQTT 5 packets ----------------------------------------------------------------------


@st.composite
def connect5(draw: st.DrawFn) -> Built:
    """A valid MQTT 5 CONNECT body and its fields."""
    props, expected_props = draw(properties(CONNECT_PROPERTIES))
    client_id = draw(texts)
    keep_alive = draw(st.integers(0, 0xFFFF))
    clean = draw(st.booleans())
    will = None
    flags = 0x02 if clean else 0
    payload = string(client_id)
    if draw(st.booleans()):
        will_props, will_expected = draw(properties(WILL_PROPERTIES))
        topic = draw(topic_names)
        if will_expected.get(0x01) == 1:
            message = draw(texts).encode()  # marked UTF-8, so it must be
        else:
            message = draw(st.binary(max_size=20))
        qos, retain = draw(st.integers(0, 2)), draw(st.booleans())
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload += will_props + string(topic) + binary(message)
        will = {"topic": topic, "payload": message, "qos": qos, "retain": retain}
        will["properties"] = will_expected
    username = draw(st.none() | texts)
    password = draw(st.none() | st.binary(max_size=20))
    if username is not None:
        flags |= 0x80
        payload += string(username)
    if password is not None:
        flags |= 0x40
        payload += binary(password)
    body = b"\x00\x04MQTT\x05" + bytes([flags]) + u16(keep_alive) + props + payload
    expected = {
        "client_id": client_id,
        "clean_start": clean,
        "keep_alive": keep_alive,
        "username": username,
        "password": password,
        "will": will,
        "properties": expected_props,
    }
    return Built(body, expected)


@st.composite
def publish5(draw: st.DrawFn) -> Built:
    """A valid client PUBLISH body, its fixed header flags and its fields."""
    qos = draw(st.integers(0, 2))
    dup = qos > 0 and draw(st.booleans())
    retain = draw(st.booleans())
    props, expected_props = draw(properties(PUBLISH_PROPERTIES))
    topic = draw(topic_names | st.just(""))
    if not topic or draw(st.booleans()):
        alias = draw(st.integers(1, 0xFFFF))
        expected_props[0x23] = alias
        props = _add_property(props, 0x23, alias)
    packet_id = draw(st.integers(1, 0xFFFF)) if qos else None
    payload = draw(st.binary(max_size=40))
    body = string(topic) + (u16(packet_id) if packet_id else b"") + props + payload
    flags = (0x08 if dup else 0) | (qos << 1) | (0x01 if retain else 0)
    expected = {"topic": topic, "payload": payload, "qos": qos, "retain": retain, "dup": dup}
    expected |= {"packet_id": packet_id, "properties": expected_props}
    return Built(body, expected, flags)


def _add_property(block: bytes, ident: int, value: Any) -> bytes:
    _, offset = _decode_varint(block)
    inner = block[offset:] + varint(ident) + encode_value(ident, value)
    return varint(len(inner)) + inner


def _decode_varint(data: bytes) -> tuple[int, int]:
    value = 0
    for index, byte in enumerate(data[:4]):
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            return value, index + 1
    raise ValueError("not a variable byte integer")


@st.composite
def subscribe5(draw: st.DrawFn) -> Built:
    """A valid SUBSCRIBE body (flags 0010) and its fields."""
    packet_id = draw(st.integers(1, 0xFFFF))
    props, expected_props = draw(properties(SUBSCRIBE_PROPERTIES))
    requests = []
    body = u16(packet_id) + props
    for topic_filter in draw(
        st.lists(texts | st.sampled_from(["#", "+/a", "$share/g/t"]), min_size=1, max_size=4)
    ):
        qos, handling = draw(st.integers(0, 2)), draw(st.integers(0, 2))
        no_local = not topic_filter.startswith("$share/") and draw(st.booleans())
        as_published = draw(st.booleans())
        options = qos | (0x04 if no_local else 0) | (0x08 if as_published else 0) | (handling << 4)
        body += string(topic_filter) + bytes([options])
        requests.append(
            {
                "topic_filter": topic_filter,
                "qos": qos,
                "no_local": no_local,
                "retain_as_published": as_published,
                "retain_handling": handling,
            }
        )
    expected = {"packet_id": packet_id, "requests": requests, "properties": expected_props}
    return Built(body, expected, 0b0010)


@st.composite
def unsubscribe5(draw: st.DrawFn) -> Built:
    """A valid UNSUBSCRIBE body (flags 0010) and its fields."""
    packet_id = draw(st.integers(1, 0xFFFF))
    props, expected_props = draw(properties(()))
    filters = draw(st.lists(texts, min_size=1, max_size=4))
    body = u16(packet_id) + props + b"".join(string(f) for f in filters)
    expected = {"packet_id": packet_id, "topic_filters": filters, "properties": expected_props}
    return Built(body, expected, 0b0010)


@st.composite
def ack5(draw: st.DrawFn) -> Built:
    """A PUBACK-family body in its short or long form, and its fields."""
    packet_id = draw(st.integers(1, 0xFFFF))
    form = draw(st.sampled_from(["short", "reason", "properties"]))
    reason = 0 if form == "short" else draw(st.integers(0, 255))
    props, expected_props = draw(properties(ACK_PROPERTIES))
    body = u16(packet_id)
    if form != "short":
        body += bytes([reason])
    if form == "properties":
        body += props
    else:
        expected_props = {}
    return Built(body, {"packet_id": packet_id, "reason": reason, "properties": expected_props})


@st.composite
def disconnect5(draw: st.DrawFn) -> Built:
    """A client DISCONNECT body (empty, a reason, or a reason and properties)."""
    form = draw(st.sampled_from(["empty", "reason", "properties"]))
    reason = 0 if form == "empty" else draw(st.integers(0, 255))
    props, expected_props = draw(properties(DISCONNECT_PROPERTIES))
    body = b"" if form == "empty" else bytes([reason]) + (props if form == "properties" else b"")
    return Built(
        body, {"reason": reason, "properties": expected_props if form == "properties" else {}}
    )


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one to three edits: a byte changed, cut, inserted or a length bumped."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["set", "flip", "cut", "insert", "extend", "length"]))
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        if how == "set" and out:
            out[at] = draw(st.sampled_from([0x00, 0x7F, 0x80, 0xFF, *PROPERTY_TYPES, 0x30]))
        elif how == "flip" and out:
            out[at] ^= 1 << draw(st.integers(0, 7))
        elif how == "cut":
            del out[at:]
        elif how == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif how == "extend":
            out += draw(st.binary(min_size=1, max_size=8))
        elif how == "length" and len(out) >= 2:
            out[at : at + 2] = u16(draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF])))
    return bytes(out)


def mutations(built: st.SearchStrategy[Built]) -> st.SearchStrategy[tuple[int, bytes]]:
    """(flags, body) of a valid packet after `mutated`; the flags sometimes changed too."""
    return built.flatmap(
        lambda b: st.tuples(st.integers(0, 15) | st.just(b.flags), mutated(b.body))
    )


# --- MQTT 3.1.1 packets (as amqtt reads them) --------------------------------------------

# Strings as a client may send them: UTF-8, not UTF-8, with U+0000, or of a wrong length.
raw_strings = st.one_of(
    texts.map(lambda t: string(t)),
    st.sampled_from([b"\xff", b"\xc0\x80", b"\xed\xa0\x80", b"a\x00b", b"\xf0\x9f"]).map(binary),
    st.binary(max_size=12),  # a length prefix that says anything
)


@st.composite
def packet311(draw: st.DrawFn) -> bytes:
    """A framed MQTT 3.1.1 packet (its Remaining Length is right) with a body that may not be."""
    kind = draw(st.sampled_from([3, 3, 4, 5, 6, 7, 8, 8, 10, 12, 14, 1, 2, 9, 11, 13]))
    right = {6: 0b0010, 8: 0b0010, 10: 0b0010}.get(kind, 0)
    if kind == 3:
        right = draw(st.integers(0, 2)) << 1 | draw(st.integers(0, 1))
    flags = draw(st.just(right) | st.integers(0, 15))
    packet_id = u16(draw(st.integers(0, 0xFFFF)))
    if kind == 3:
        body = (
            draw(raw_strings) + (packet_id if flags & 0x06 else b"") + draw(st.binary(max_size=20))
        )
    elif kind == 8:
        entries = draw(st.lists(st.tuples(raw_strings, st.integers(0, 255)), max_size=3))
        body = packet_id + b"".join(topic + bytes([qos]) for topic, qos in entries)
    elif kind == 10:
        body = packet_id + b"".join(draw(st.lists(raw_strings, max_size=3)))
    elif kind in (4, 5, 6, 7):
        body = packet_id + draw(st.just(b"") | st.binary(max_size=3))
    elif kind in (12, 14):
        body = draw(st.just(b"") | st.binary(max_size=3))
    else:
        body = draw(st.binary(max_size=30))
    if draw(st.integers(0, 3)) == 0:
        body = draw(mutated(body))
    return frame(kind << 4 | flags, body)


@st.composite
def connect311(draw: st.DrawFn) -> bytes:
    """A framed MQTT 3.1.1 CONNECT, valid or with odd flags, strings and lengths."""
    flags = draw(st.integers(0, 255) | st.sampled_from([0x02, 0xC2, 0xC6, 0xEE]))
    body = string(draw(st.sampled_from(["MQTT", "MQIsdp", "mqtt", ""]))) + bytes(
        [draw(st.sampled_from([4, 4, 3, 5, 0, 255])), flags]
    )
    body += u16(draw(st.integers(0, 0xFFFF))) + draw(raw_strings)
    if flags & 0x04:
        body += draw(raw_strings) + draw(raw_strings)
    if flags & 0x80:
        body += draw(raw_strings)
    if flags & 0x40:
        body += draw(raw_strings)
    if draw(st.integers(0, 3)) == 0:
        body = draw(mutated(body))
    return frame(0x10, body)


def packets_after_connect(version: int) -> st.SearchStrategy[bytes]:
    """What a client might send once connected: framed packets, valid-ish or mutated."""
    any_frame = st.builds(frame, st.integers(0, 255), st.binary(max_size=64))
    if version == 4:
        return st.one_of(packet311(), packet311(), any_frame)
    builders = {
        1: connect5(),
        3: publish5(),
        4: ack5(),
        6: ack5().map(lambda b: Built(b.body, b.expected, 0b0010)),
        8: subscribe5(),
        10: unsubscribe5(),
        14: disconnect5(),
    }
    mutated5 = st.sampled_from(sorted(builders)).flatmap(
        lambda kind: mutations(builders[kind]).map(lambda fb: frame(kind << 4 | fb[0], fb[1]))
    )
    valid5 = st.sampled_from(sorted(builders)).flatmap(
        lambda kind: builders[kind].map(lambda b: frame(kind << 4 | b.flags, b.body))
    )
    return st.one_of(mutated5, valid5, any_frame)
