"""The CONNECT of either protocol version, as the broker needs it, and the CONNACK that
refuses one.

`read_connect` decides from a CONNECT's body alone, before anyone is authenticated: an
MQTT 5 or 3.1.1 request to serve, a refusal to answer in the client's version (MQTT 3.1
"MQIsdp" and unknown levels: unacceptable protocol version; an empty client id with a
persistent session; a password without a user name), or nothing at all (not MQTT, or
malformed: the connection is closed without a CONNACK [MQTT-3.1.4-1], [MQTT-1.5.3-1]).
"""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass

from fleetcore.mqtt import mqtt5, mqtt311
from fleetcore.mqtt.hooks import ClientInfo
from fleetcore.mqtt.session import Will


@dataclass(frozen=True, slots=True)
class ConnectRequest:
    """A CONNECT of either protocol version."""

    client: ClientInfo
    keep_alive: int
    will: Will | None
    random_id: bool  # the client sent an empty id
    session_expiry: int | None = None  # MQTT 5; None for 3.1.1 (the clean flag decides)
    max_packet_size: int | None = None  # MQTT 5: the largest packet the client accepts


@dataclass(frozen=True, slots=True)
class Refusal:
    """A CONNECT to refuse: the client's protocol level, and the reason (MQTT 5 code)."""

    protocol: int
    reason: int


def read_connect(body: bytes, remote: str) -> ConnectRequest | Refusal | None:
    """What to do with a CONNECT's body (see the module docstring)."""
    try:
        level = mqtt5.protocol_level(body)
    except mqtt5.ProtocolError:
        # MQTT 3.1 ("MQIsdp") gets its answer; anything else is not MQTT at all.
        if body[2:8] == b"MQIsdp":
            return Refusal(mqtt311.PROTOCOL_LEVEL, mqtt5.UNSUPPORTED_PROTOCOL_VERSION)
        return None
    if level == mqtt5.PROTOCOL_LEVEL:
        try:
            return _from_mqtt5(mqtt5.parse_connect(body), remote)
        except mqtt5.ProtocolError as exc:
            return Refusal(mqtt5.PROTOCOL_LEVEL, exc.reason)
    try:
        connect = mqtt311.parse_connect(body)
    except mqtt5.ProtocolError as exc:
        if exc.reason == mqtt5.MALFORMED_PACKET:
            return None
        return Refusal(mqtt311.PROTOCOL_LEVEL, exc.reason)
    will = connect.will
    password = None
    if connect.password is not None:
        # A password that is not text cannot be a token of ours: it stays unmatchable.
        password = connect.password.decode("utf-8", "replace")
    client = ClientInfo(
        client_id=connect.client_id,
        username=connect.username,
        password=password,
        clean_session=connect.clean_session,
        remote=remote,
    )
    return ConnectRequest(
        client,
        connect.keep_alive,
        Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        random_id=not connect.client_id,
    )


def _from_mqtt5(connect: mqtt5.Connect, remote: str) -> ConnectRequest:
    will = connect.will
    client = ClientInfo(
        client_id=connect.client_id,
        username=connect.username,
        password=connect.password.decode("utf-8", "replace") if connect.password else None,
        clean_session=connect.clean_start,
        remote=remote,
        protocol=mqtt5.PROTOCOL_LEVEL,
    )
    return ConnectRequest(
        client,
        connect.keep_alive,
        Will(will.topic, will.payload, will.qos, will.retain) if will else None,
        random_id=not connect.client_id,
        session_expiry=connect.session_expiry,
        max_packet_size=connect.maximum_packet_size,
    )


def random_client_id() -> str:
    """An id for a client that sent none (MQTT 5 clients are told it in the CONNACK)."""
    return f"auto-{secrets.token_hex(8)}"


# CONNACK return codes of MQTT 3.1.1 and the MQTT 5 reason codes that say the same.
_V311_CODES = {
    mqtt5.UNSUPPORTED_PROTOCOL_VERSION: mqtt311.UNACCEPTABLE_PROTOCOL_VERSION,
    mqtt5.CLIENT_IDENTIFIER_NOT_VALID: mqtt311.IDENTIFIER_REJECTED,
    mqtt5.SERVER_UNAVAILABLE: mqtt311.SERVER_UNAVAILABLE,
    mqtt5.BAD_USER_NAME_OR_PASSWORD: mqtt311.BAD_USERNAME_PASSWORD,
    mqtt5.NOT_AUTHORIZED: mqtt311.NOT_AUTHORIZED,
    # What 3.1.1 can only call "server unavailable" (the rest: not authorized).
    mqtt5.SERVER_BUSY: mqtt311.SERVER_UNAVAILABLE,
    mqtt5.CONNECTION_RATE_EXCEEDED: mqtt311.SERVER_UNAVAILABLE,
    mqtt5.QUOTA_EXCEEDED: mqtt311.SERVER_UNAVAILABLE,
}
_V5_CODES = {
    mqtt311.UNACCEPTABLE_PROTOCOL_VERSION: mqtt5.UNSUPPORTED_PROTOCOL_VERSION,
    mqtt311.IDENTIFIER_REJECTED: mqtt5.CLIENT_IDENTIFIER_NOT_VALID,
    mqtt311.SERVER_UNAVAILABLE: mqtt5.SERVER_UNAVAILABLE,
    mqtt311.BAD_USERNAME_PASSWORD: mqtt5.BAD_USER_NAME_OR_PASSWORD,
    mqtt311.NOT_AUTHORIZED: mqtt5.NOT_AUTHORIZED,
}


def refusal_connack(protocol: int, code: int) -> bytes:
    """The CONNACK refusing a CONNECT, in the client's protocol version. `code` is an MQTT 5
    reason code or an MQTT 3.1.1 return code (what `Refused` carries: either)."""
    if protocol == mqtt5.PROTOCOL_LEVEL:
        reason = _V5_CODES.get(code, code)
        with contextlib.suppress(ValueError):  # not a CONNACK reason code
            return mqtt5.connack(False, reason)
        return mqtt5.connack(False, mqtt5.UNSPECIFIED_ERROR)
    if code >= 0x80:
        code = _V311_CODES.get(code, mqtt311.NOT_AUTHORIZED)
    if not 0 < code <= mqtt311.NOT_AUTHORIZED:
        code = mqtt311.NOT_AUTHORIZED
    return mqtt311.connack(False, code)
