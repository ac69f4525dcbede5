"""Fuzzing the parsers of device JSON and topics: telemetry, events, the topic grammar.

Any input ends in a result or the parser's documented error (PayloadError, Invalid,
TopicError), within a deadline; and whatever is accepted can be stored as it is (the
writer's orjson encoding, UTF-8 text, no NUL), so one device's odd payload can never fail a
batch that other tenants' readings share. The DEX parser (issue 15) belongs here when it
exists.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fleetcore.devices.models import DeviceProfile
from fleetcore.errors import Invalid, PayloadTooLarge
from fleetcore.events.codec import MAX_DATA_BYTES, MAX_EVENTS, parse_events
from fleetcore.events.models import SEVERITIES
from fleetcore.telemetry.ingest import Checked, decode_and_check
from fleetcore_protocol import topics
from fleetcore_protocol.telemetry import Decoded, Kind, Limits, PayloadError, decode_telemetry
from tests.support.fuzz_json import (
    device_profiles,
    documents_as_bytes,
    event_documents,
    telemetry_documents,
)
from tests.support.hypothesis_profiles import fuzz

NOW = 1_800_000_000_000
LIMITS = Limits()
KEY = re.compile(r"[A-Za-z0-9_.:\-/]{1,128}")
EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
LOADERS: dict[str, Callable[[bytes], Any]] = {"json": json.loads, "orjson": orjson.loads}


def _storable_text(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: neither database stores it
        return False
    return "\x00" not in text


def _assert_storable(decoded: Decoded) -> None:
    """Every reading can be written exactly as the writer writes it."""
    assert len(decoded.readings) <= LIMITS.max_readings
    for reading in decoded.readings:
        assert KEY.fullmatch(reading.key), reading.key
        assert LIMITS.min_ts <= reading.ts <= NOW + LIMITS.max_future_ms
        if reading.kind is Kind.NUMBER:
            assert isinstance(reading.value, float)
            assert math.isfinite(reading.value)
        elif reading.kind is Kind.BOOLEAN:
            assert isinstance(reading.value, bool)
        elif reading.kind is Kind.TEXT:
            assert isinstance(reading.value, str)
            assert _storable_text(reading.value)
            assert len(reading.value) <= LIMITS.max_text_length
        else:
            assert isinstance(reading.value, dict | list)
            stored = orjson.dumps(reading.value)  # the writer's encoding (telemetry/writer.py)
            assert len(stored) <= LIMITS.max_json_bytes
            assert b"\\u0000" not in stored
    for problem in decoded.problems:
        assert problem.code
        assert problem.message


def _decode(payload: bytes, loads: str) -> None:
    outcome = _outcome(decode_telemetry, payload, now_ms=NOW, loads=LOADERS[loads])
    if isinstance(outcome, PayloadError):
        assert outcome.code
        assert outcome.message
    else:
        assert isinstance(outcome, Decoded)
        _assert_storable(outcome)


def _outcome(parse: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """What a parser returned, or the documented error it raised (anything else fails)."""
    try:
        return parse(*args, **kwargs)
    except (PayloadError, Invalid, PayloadTooLarge, topics.TopicError) as exc:
        return exc


# --- telemetry ---------------------------------------------------------------------------


@fuzz()
@given(payload=st.binary(max_size=2_048), loads=st.sampled_from(sorted(LOADERS)))
@example(payload=b'{"t": 1' + b"0" * 400 + b"}", loads="json")  # float(10**400): OverflowError
@example(payload=b'{"ts": 1' + b"0" * 400 + b', "values": {"t": 1}}', loads="json")
@example(payload=b"[" * 100_000, loads="json")  # RecursionError in json.loads
@example(payload=b'{"t\\n": 1}', loads="json")  # "$" let a key end in a newline
@example(payload=b'{"t\\n": 1}', loads="orjson")
@example(payload=b'{"t": "\\ud800"}', loads="json")  # a lone surrogate, not storable text
@example(payload=b'{"t": {"a": "\\udc00"}}', loads="json")
@example(payload=b'{"t": [18446744073709551616]}', loads="json")  # orjson cannot write 2**64
@example(payload=b'{"t": ' + b"[" * 300 + b"]" * 300 + b"}", loads="orjson")  # writer: orjson 254
@example(payload=b'{"t": ' + b"[" * 990 + b"]" * 990 + b"}", loads="json")
def test_telemetry_any_bytes(payload: bytes, loads: str) -> None:
    _decode(payload, loads)


@fuzz()
@given(payload=documents_as_bytes(telemetry_documents()), loads=st.sampled_from(sorted(LOADERS)))
def test_telemetry_odd_json(payload: bytes, loads: str) -> None:
    _decode(payload, loads)


@fuzz(scale=0.1)
@given(
    loads=st.sampled_from(sorted(LOADERS)),
    filler=st.sampled_from([b"[", b"{", b'"', b"\xff", b"1"]),
)
def test_telemetry_largest_payload_of_garbage(loads: str, filler: bytes) -> None:
    # The hypothesis deadline bounds the time; the size limit keeps the rest out.
    _decode(filler * LIMITS.max_bytes, loads)
    with pytest.raises(PayloadError) as caught:
        decode_telemetry(filler * (LIMITS.max_bytes + 1), now_ms=NOW, loads=LOADERS[loads])
    assert caught.value.code == "PAYLOAD_TOO_LARGE"


@fuzz()
@given(payload=documents_as_bytes(telemetry_documents()), profile=device_profiles())
def test_ingest_decode_and_check(payload: bytes, profile: DeviceProfile) -> None:
    # The server's pure ingest step (HTTP and MQTT): codec, then the device profile.
    checked = _outcome(decode_and_check, payload, profile, now_ms=NOW)
    if isinstance(checked, Invalid | PayloadTooLarge):
        assert checked.code
    else:
        assert isinstance(checked, Checked)
        _assert_storable(Decoded(checked.readings, checked.problems))


def test_deep_json_value_is_a_named_problem_not_a_crash() -> None:
    payload = b'{"ok": 1, "deep": ' + b"[" * 40 + b"]" * 40 + b"}"
    for loads in LOADERS.values():
        decoded = decode_telemetry(payload, now_ms=NOW, loads=loads)
        assert [r.key for r in decoded.readings] == ["ok"]
        assert [(p.code, p.key) for p in decoded.problems] == [("VALUE_INVALID", "deep")]


# --- events ------------------------------------------------------------------------------


def _events(payload: bytes) -> None:
    events = _outcome(parse_events, payload, now_ms=NOW)
    if isinstance(events, Invalid):
        assert events.code in ("BAD_JSON", "INVALID_EVENT", "TOO_MANY_EVENTS")
        return
    assert 1 <= len(events) <= MAX_EVENTS
    for event in events:
        assert EVENT_TYPE.fullmatch(event.type), event.type
        assert event.severity in SEVERITIES
        assert isinstance(event.data, dict)
        stored = orjson.dumps(event.data)
        assert len(stored) <= MAX_DATA_BYTES
        assert b"\\u0000" not in stored
        assert json.loads(json.dumps(event.data)) == event.data  # the JSON column's encoder
        assert LIMITS.min_ts <= event.ts_ms <= NOW + LIMITS.max_future_ms


@fuzz()
@given(payload=st.binary(max_size=2_048))
@example(payload=b'{"type": "a", "data": {"x": ' + b"[" * 300 + b"]" * 300 + b"}}")  # TypeError
@example(payload=b'{"type": "a\\n"}')  # "$" let a type end in a newline
def test_events_any_bytes(payload: bytes) -> None:
    _events(payload)


@fuzz()
@given(payload=documents_as_bytes(event_documents()))
def test_events_odd_json(payload: bytes) -> None:
    _events(payload)


# --- topics ------------------------------------------------------------------------------

segments = st.one_of(
    st.sampled_from(["", "+", "#", "a+", "#b", "\x00", "x\x00", " ", "\u200b", "é", "1", "²"]),
    st.text(max_size=70),
    st.integers(0, 10**12).map(str),
    st.sampled_from(["123", "0", "00", "1234567890", "12345678901", "\u0661\u0662", "\uff11"]),
)
native_words = st.sampled_from(
    ["devices", "telemetry", "attributes", "events", "status", "commands", "result", "config"]
)
tb_words = st.sampled_from(["v1", "devices", "me", "rpc", "request", "response", "attributes"])
topic_strings = st.one_of(
    st.text(max_size=200),
    st.lists(st.one_of(segments, native_words, tb_words), max_size=7).map("/".join),
    st.builds(
        lambda rest: f"{topics.THINGSBOARD_PREFIX}/{rest}",
        st.lists(st.one_of(segments, tb_words), max_size=4).map("/".join),
    ),
    st.builds(
        lambda d, rest: f"devices/{d}/{rest}",
        segments,
        st.lists(st.one_of(segments, native_words), max_size=3).map("/".join),
    ),
    st.integers(1, 70_000).map(lambda n: "devices/" + "d" * n + "/telemetry"),
)


@fuzz()
@given(topic=topic_strings)
@example(topic="v1/devices/me/rpc/response/\u00b2")  # "²".isdigit(): int() raised later
@example(topic="v1/devices/me/rpc/request/\u0661\u0662")  # Arabic-Indic digits
@example(topic="v1/devices/me/attributes/request/\uff11")  # a full-width digit
def test_topic_parse(topic: str) -> None:
    parsed = _outcome(topics.parse, topic)
    if isinstance(parsed, topics.TopicError):
        assert str(parsed)
        return
    assert parsed.channel in topics.Channel
    if parsed.device_id is not None:
        assert 0 < len(parsed.device_id) <= topics.MAX_DEVICE_ID_LENGTH
        assert not set(parsed.device_id) & set("+#/\x00")
        assert parsed.device_id.isprintable()
        assert parsed.render() == topic  # a native topic has one spelling
    elif parsed.command_id is not None:
        # ThingsBoard request ids are stored and answered as integers.
        assert re.fullmatch(r"[0-9]{1,10}", parsed.command_id), parsed.command_id
        assert str(topic).endswith("/" + parsed.command_id)


@fuzz()
@given(
    device_id=st.one_of(segments, st.uuids().map(str)),
    channel=st.sampled_from(topics.Channel),
    command_id=st.one_of(st.none(), segments, st.uuids().map(str)),
)
def test_topic_build_then_parse(
    device_id: str, channel: topics.Channel, command_id: str | None
) -> None:
    try:
        topic = topics.native(device_id, channel, command_id)
    except topics.TopicError:
        return
    expected = command_id if channel is topics.Channel.COMMAND_RESULT else None
    assert topics.parse(topic) == topics.Topic(channel, device_id, expected)


@fuzz()
@given(
    channel=st.sampled_from(
        [topics.Channel.TELEMETRY, topics.Channel.ATTRIBUTES, topics.Channel.COMMAND_RESULT]
    ),
    rpc_id=st.integers(0, 9_999_999_999),
)
def test_thingsboard_topic_render_then_parse(channel: topics.Channel, rpc_id: int) -> None:
    command_id = str(rpc_id) if channel is topics.Channel.COMMAND_RESULT else None
    topic = topics.Topic(channel, None, command_id)
    assert topics.parse(topic.render()) == topic
