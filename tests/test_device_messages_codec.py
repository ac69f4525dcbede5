"""The pure device-message codec (fleetcore_protocol.messages): every kind on native and
ThingsBoard topics, both ways; bad topics and payloads are named, never raised."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest

from fleetcore_protocol import messages as m
from fleetcore_protocol.messages import Family

DEVICE = "3f2b6a4e-1c1d-4d1e-9a55-0b7c2f0f9e11"
NATIVE, TB = Family.NATIVE, Family.THINGSBOARD

# (message, the families a device can say it on)
INBOUND: list[tuple[m.DeviceMessage, tuple[Family, ...]]] = [
    (m.Telemetry(b'{"t": 21.5}'), (NATIVE, TB)),
    (m.ClientAttributes({"fw": "1.2", "nested": {"a": [1, 2]}}), (NATIVE, TB)),
    (m.Event(b'{"type": "door_open"}'), (NATIVE,)),
    (m.Status("offline"), (NATIVE,)),
    (m.CommandResult("c-17", {"status": "succeeded", "result": 1}, False), (NATIVE,)),
    (m.CommandResult("17", {"any": "body"}, True), (TB,)),
    (m.AttributeRequest("5", True, frozenset({"a", "b"}), True, frozenset({"c"})), (TB,)),
    (m.AttributeRequest("6", False, None, True, None), (TB,)),
    (m.RpcRequest("9", "getSessionLimits", {"x": 1}), (TB,)),
    (m.DexUpload(b"DXS*1234567*VA*V0/6*1\r\n"), (NATIVE, TB)),
    (m.ProvisionRequest("key", "secret", "sn-1"), (NATIVE, TB)),
]


def _id(value: Any) -> str:
    return type(value).__name__


@pytest.mark.parametrize(("message", "families"), INBOUND, ids=[_id(m) for m, _ in INBOUND])
@pytest.mark.parametrize("family", list(Family))
def test_inbound_round_trip(
    message: m.DeviceMessage, families: tuple[Family, ...], family: Family
) -> None:
    encoded = m.encode_device(message, DEVICE, family)
    if family not in families:
        assert encoded is None
        return
    assert encoded is not None
    topic, payload = encoded
    assert m.decode(topic, payload) == message
    assert m.decode(topic, payload, loads=orjson.loads) == message


@pytest.mark.parametrize(
    ("topic", "payload", "expected"),
    [
        ("devices/d/status", b"ONLINE", m.Status("online")),
        ("devices/d/status", b'"offline"', m.Status("offline")),
        ("devices/d/status", b'{"status": "online"}', m.Status("online")),
        (
            "v1/devices/me/attributes/request/3",
            b"{}",  # neither scope named: both, every key
            m.AttributeRequest("3", True, None, True, None),
        ),
        (
            "v1/devices/me/attributes/request/4",
            b'{"sharedKeys": ["x", 2]}',
            m.AttributeRequest("4", False, None, True, frozenset({"x", "2"})),
        ),
        ("v1/devices/me/rpc/request/1", b"{}", m.RpcRequest("1", None, None)),
        ("/provision/request", b"{}", m.ProvisionRequest("", "", "")),
    ],
)
def test_decode_accepts_what_devices_send(
    topic: str, payload: bytes, expected: m.DeviceMessage
) -> None:
    assert m.decode(topic, payload) == expected


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("", b"{}", "unknown_topic"),
        ("devices/d/unknown", b"{}", "unknown_topic"),
        ("devices/d/commands/c/other", b"{}", "unknown_topic"),
        ("v1/devices/me/rpc/request/x1", b"{}", "unknown_topic"),
        ("v1/devices/me/rpc/request/²", b"{}", "unknown_topic"),
        ("devices/+/telemetry", b"{}", "unknown_topic"),
        ("devices/d/commands", b"{}", "not_allowed"),  # flows to the device
        ("devices/d/config", b"{}", "not_allowed"),
        ("devices/d/attributes", b"{not json", "malformed_json"),
        ("devices/d/attributes", b"\xff\xfe", "malformed_json"),
        ("devices/d/attributes", b"[1, 2]", "wrong_type"),
        ("devices/d/attributes", b"[" * 5000 + b"]" * 5000, "malformed_json"),
        ("devices/d/attributes", b'{"a":' * 40 + b"1" + b"}" * 40, "unstorable_json"),
        # orjson refuses a lone surrogate as it reads; json reads it and storage refuses it.
        ("devices/d/attributes", b'{"a": "\\ud800"}', "malformed_json|unstorable_json"),
        ("devices/d/commands/c/result", b"null", "wrong_type"),
        ("v1/devices/me/rpc/response/1", b"", "malformed_json"),
        ("v1/devices/me/attributes/request/1", b"7", "wrong_type"),
        ("devices/d/status", b"sleeping", "wrong_type"),
        ("devices/d/status", b'{"status": ', "wrong_type"),
        ("devices/d/status", b"[]", "wrong_type"),
        ("/provision/request", b"nope", "bad_provision_request"),
        ("/provision/request", b"[]", "bad_provision_request"),
    ],
)
def test_bad_messages_are_named_never_raised(topic: str, payload: bytes, reason: str) -> None:
    for loads in (json.loads, orjson.loads):
        decoded = m.decode(topic, payload, loads=loads)
        assert isinstance(decoded, m.Undecodable), decoded
        assert decoded.reason in reason.split("|")
        assert decoded.detail


CONFIG_TOPIC = f"devices/{DEVICE}/config"
# (message, {family: (topic, JSON payload)}); a family left out has no form of the message.
OUTBOUND: list[tuple[m.OutboundMessage, dict[Family, tuple[str, Any]]]] = [
    (
        m.Command("c-1", "reboot", {"delay": 5}, rpc_id=42),
        {
            NATIVE: (
                f"devices/{DEVICE}/commands",
                {"id": "c-1", "method": "reboot", "params": {"delay": 5}},
            ),
            TB: ("v1/devices/me/rpc/request/42", {"method": "reboot", "params": {"delay": 5}}),
        },
    ),
    (
        m.Command("c-2", "ping", None),  # no RPC id: native topics only
        {NATIVE: (f"devices/{DEVICE}/commands", {"id": "c-2", "method": "ping", "params": None})},
    ),
    (
        m.DesiredConfig({"interval": 10}, 3),
        {NATIVE: (CONFIG_TOPIC, {"shared": {"interval": 10}, "version": 3})},
    ),
    (
        m.AttributeUpdate({"interval": 10}, ("old",)),
        {TB: ("v1/devices/me/attributes", {"interval": 10, "deleted": ["old"]})},
    ),
    (
        m.AttributeUpdate({"interval": 10}),
        {TB: ("v1/devices/me/attributes", {"interval": 10})},
    ),
    (
        m.AttributeReply("7", {"fw": "1"}, None),
        {TB: ("v1/devices/me/attributes/response/7", {"client": {"fw": "1"}})},
    ),
    (
        m.AttributeReply("8", {}, {"a": 1}),
        {TB: ("v1/devices/me/attributes/response/8", {"client": {}, "shared": {"a": 1}})},
    ),
    (
        m.RpcReply("9", {"error": "unknown method 'x'"}),
        {TB: ("v1/devices/me/rpc/response/9", {"error": "unknown method 'x'"})},
    ),
    (
        m.ProvisionReply(token="tok"),
        {
            TB: (
                "/provision/response",
                {"status": "SUCCESS", "credentialsType": "ACCESS_TOKEN", "credentialsValue": "tok"},
            )
        },
    ),
    (
        m.ProvisionReply(error="no such key"),
        {TB: ("/provision/response", {"status": "FAILURE", "errorMsg": "no such key"})},
    ),
]


@pytest.mark.parametrize(("message", "forms"), OUTBOUND, ids=[_id(m) for m, _ in OUTBOUND])
@pytest.mark.parametrize("family", list(Family))
def test_outbound_encoding(
    message: m.OutboundMessage, forms: dict[Family, tuple[str, Any]], family: Family
) -> None:
    encoded = m.encode(message, DEVICE, family, dumps=orjson.dumps)
    if family not in forms:
        assert encoded is None
        return
    assert encoded is not None
    topic, payload = encoded
    assert (topic, orjson.loads(payload)) == forms[family]
    # The standard-library encoder writes the same JSON.
    plain = m.encode(message, DEVICE, family)
    assert plain is not None
    assert (plain[0], json.loads(plain[1])) == forms[family]


def test_only_the_desired_configuration_is_retained() -> None:
    assert [type(message).__name__ for message, _ in OUTBOUND if message.retain] == [
        "DesiredConfig"
    ]


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "x" * 65])
def test_ids_outside_the_grammar_encode_to_nothing(device_id: str) -> None:
    assert m.encode(m.DesiredConfig({}, 0), device_id, NATIVE) is None
    assert m.encode(m.Command("c", "m", None), device_id, NATIVE) is None
    assert m.encode_device(m.Telemetry(b"{}"), device_id, NATIVE) is None
    assert m.encode_device(m.Status("online"), DEVICE, NATIVE) is not None
