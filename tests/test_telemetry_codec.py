"""The pure telemetry decoder: shapes, kinds, limits, and named problems."""

from __future__ import annotations

import json

import pytest

from fleetcore_protocol.telemetry import Kind, Limits, PayloadError, decode_telemetry

NOW = 1_800_000_000_000


def _decode(document: object, **limits: int) -> object:
    return decode_telemetry(json.dumps(document).encode(), now_ms=NOW, limits=Limits(**limits))


def test_flat_object_uses_server_time() -> None:
    out = decode_telemetry(
        b'{"temperature": 21.5, "door": "open", "ok": true, "gps": {"lat": 1}}', now_ms=NOW
    )
    assert not out.problems
    kinds = {r.key: (r.kind, r.value, r.ts) for r in out.readings}
    assert kinds == {
        "temperature": (Kind.NUMBER, 21.5, NOW),
        "door": (Kind.TEXT, "open", NOW),
        "ok": (Kind.BOOLEAN, True, NOW),
        "gps": (Kind.JSON, {"lat": 1}, NOW),
    }


def test_timestamped_and_arrays() -> None:
    out = decode_telemetry(
        json.dumps(
            [{"ts": NOW - 1000, "values": {"t": 1}}, {"t": 2}, {"ts": NOW - 5, "values": {"t": 3}}]
        ).encode(),
        now_ms=NOW,
    )
    assert [(r.ts, r.value) for r in out.readings] == [
        (NOW - 1000, 1.0),
        (NOW, 2.0),
        (NOW - 5, 3.0),
    ]


def test_integers_become_numbers_and_booleans_stay_booleans() -> None:
    out = decode_telemetry(b'{"count": 3, "flag": false}', now_ms=NOW)
    values = {r.key: (r.kind, r.value) for r in out.readings}
    assert values == {"count": (Kind.NUMBER, 3.0), "flag": (Kind.BOOLEAN, False)}


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (b"not json", "MALFORMED_JSON"),
        (b"\xff\xfe", "MALFORMED_JSON"),
        (b"42", "SHAPE_INVALID"),
        (b'"text"', "SHAPE_INVALID"),
        (b"[]", "EMPTY"),
        (b"{}", "EMPTY"),
    ],
)
def test_unusable_payloads_are_refused_whole(payload: bytes, code: str) -> None:
    with pytest.raises(PayloadError) as info:
        decode_telemetry(payload, now_ms=NOW)
    assert info.value.code == code


def test_size_and_count_limits() -> None:
    with pytest.raises(PayloadError, match="larger"):
        decode_telemetry(b'{"a": "' + b"x" * 300 + b'"}', now_ms=NOW, limits=Limits(max_bytes=100))
    with pytest.raises(PayloadError) as info:
        _decode({f"k{i}": i for i in range(11)}, max_readings=10)
    assert info.value.code == "TOO_MANY_READINGS"


def test_bad_items_are_named_and_good_ones_kept() -> None:
    out = _decode(
        [
            {"ts": NOW, "values": {"good": 1, "bad key!": 2, "nothing": None}},
            {"ts": NOW + 3_600_000, "values": {"future": 1}},
            {"ts": 1_700_000, "values": {"seconds": 1}},
            {"ts": "yesterday", "values": {"x": 1}},
            "not an object",
            {"ts": NOW, "values": [1, 2]},
            {"fine": "yes"},
        ]
    )
    assert [r.key for r in out.readings] == ["good", "fine"]
    problems = [(p.item, p.code, p.key) for p in out.problems]
    assert problems == [
        (0, "KEY_INVALID", "bad key!"),
        (0, "VALUE_INVALID", "nothing"),
        (1, "TS_IN_FUTURE", None),
        (2, "TS_INVALID", None),
        (3, "TS_INVALID", None),
        (4, "ITEM_INVALID", None),
        (5, "ITEM_INVALID", None),
    ]


def test_non_finite_numbers_and_long_values_refused() -> None:
    out = decode_telemetry(b'{"a": NaN, "b": Infinity, "c": 1}', now_ms=NOW)
    assert [r.key for r in out.readings] == ["c"]
    assert {p.key for p in out.problems} == {"a", "b"}
    long = _decode({"txt": "x" * 20, "obj": {"k": "y" * 50}}, max_text_length=10, max_json_bytes=20)
    assert not long.readings
    assert {p.key for p in long.problems} == {"txt", "obj"}


def test_long_keys_refused() -> None:
    out = _decode({"k" * 129: 1})
    assert out.problems[0].code == "KEY_INVALID"


def test_custom_loads_is_used() -> None:
    calls: list[bytes] = []

    def loads(raw: bytes) -> object:
        calls.append(raw)
        return json.loads(raw)

    decode_telemetry(b'{"a": 1}', now_ms=NOW, loads=loads)
    assert calls == [b'{"a": 1}']


def test_nul_characters_and_non_finite_json_refused() -> None:
    out = decode_telemetry(
        b'{"a": "x\\u0000y", "b": {"k": "\\u0000"}, "c": [1, NaN], "ok": "fine"}', now_ms=NOW
    )
    assert [r.key for r in out.readings] == ["ok"]
    assert {p.key: p.code for p in out.problems} == {
        "a": "VALUE_INVALID",
        "b": "VALUE_INVALID",
        "c": "VALUE_INVALID",
    }
