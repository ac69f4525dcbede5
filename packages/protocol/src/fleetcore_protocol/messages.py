"""Device messages: what a device says and what the platform says back, as typed values.

Pure functions, no I/O, the same for every transport (the embedded broker, an external
broker's workers): `decode(topic, payload)` gives a device message or an `Undecodable`
naming the dead-letter reason, never an exception; `encode(message, device_id, family)`
gives the (topic, payload) of an outbound message on native or ThingsBoard topics.

Telemetry, events and DEX files stay bytes here: their codecs need the device's profile or
the clock (fleetcore_protocol.telemetry, the server's events codec, the DEX parser).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from fleetcore_protocol import topics
from fleetcore_protocol.jsonvalue import unstorable
from fleetcore_protocol.topics import Channel, Topic, TopicError

Loads = Callable[[bytes], Any]
Dumps = Callable[[Any], bytes]


def _dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


class Family(StrEnum):
    """Which topics a device uses: native (devices/{id}/...) or ThingsBoard (v1/devices/me)."""

    NATIVE = "native"
    THINGSBOARD = "thingsboard"


# -- inbound: what a device says ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Telemetry:
    """Readings, still encoded: checked against the device's profile by the server."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class ClientAttributes:
    """Attributes the device reports about itself."""

    values: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Event:
    """One event or an array of them, still encoded (the server's events codec reads it)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Status:
    """The device says it is "online" or "offline" (often its last will)."""

    status: str


@dataclass(frozen=True, slots=True)
class CommandResult:
    """An answer to a command: by command id (native) or RPC id (ThingsBoard, any body)."""

    command_id: str
    body: dict[str, Any]
    thingsboard: bool


@dataclass(frozen=True, slots=True)
class AttributeRequest:
    """ThingsBoard: the device asks for attribute values (keys None: all of that scope)."""

    request_id: str
    client: bool
    client_keys: frozenset[str] | None
    shared: bool
    shared_keys: frozenset[str] | None


@dataclass(frozen=True, slots=True)
class RpcRequest:
    """ThingsBoard client-side RPC: the device asks the platform."""

    request_id: str
    method: Any
    params: Any


@dataclass(frozen=True, slots=True)
class DexUpload:
    """A vending machine's DEX/EVA-DTS audit file, raw bytes."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class OtaChunkRequest:
    """ThingsBoard: the device asks chunk `chunk` of `size` bytes of its assigned package
    ("fw" firmware, "sw" software)."""

    package: str
    request_id: str
    chunk: int
    size: int


@dataclass(frozen=True, slots=True)
class ProvisionRequest:
    """ThingsBoard device provisioning: a new device asks for its credentials."""

    provision_key: Any
    provision_secret: Any
    device_name: Any


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A message that cannot be used: the dead letter's reason and detail."""

    reason: str
    detail: str


DeviceMessage = (
    Telemetry
    | ClientAttributes
    | Event
    | Status
    | CommandResult
    | AttributeRequest
    | RpcRequest
    | DexUpload
    | OtaChunkRequest
    | ProvisionRequest
)


def decode(topic: str, payload: bytes, *, loads: Loads = json.loads) -> DeviceMessage | Undecodable:
    """A device message from a topic and payload, or why not (never raises)."""
    if topic == topics.PROVISION_REQUEST:
        return decode_provision(payload, loads=loads)
    try:
        parsed = topics.parse(topic)
    except TopicError as exc:
        return Undecodable("unknown_topic", str(exc))
    if parsed.channel not in topics.UPSTREAM:
        return Undecodable("not_allowed", "this topic flows to the device")
    return decode_payload(parsed, payload, loads=loads)


def decode_payload(
    topic: Topic, payload: bytes, *, loads: Loads = json.loads
) -> DeviceMessage | Undecodable:
    """The message on an upstream topic already parsed (and checked against its sender)."""
    channel = topic.channel
    if channel is Channel.TELEMETRY:
        return Telemetry(payload)
    if channel is Channel.EVENTS:
        return Event(payload)
    if channel is Channel.DEX:
        return DexUpload(payload)
    if channel is Channel.OTA_CHUNK:
        return _chunk_request(topic, payload)
    if channel is Channel.STATUS:
        status = _status_of(payload, loads)
        if status is None:
            return Undecodable("wrong_type", 'status is "online" or "offline"')
        return Status(status)
    body = json_object(payload, loads=loads)
    if isinstance(body, Undecodable):
        return body
    if channel is Channel.ATTRIBUTES:
        return ClientAttributes(body)
    if channel is Channel.COMMAND_RESULT and topic.command_id is not None:
        return CommandResult(topic.command_id, body, topic.device_id is None)
    if channel is Channel.ATTRIBUTE_REQUEST and topic.command_id is not None:
        return _attribute_request(topic.command_id, body)
    if channel is Channel.CLIENT_RPC and topic.command_id is not None:
        return RpcRequest(topic.command_id, body.get("method"), body.get("params"))
    return Undecodable("not_allowed", "this topic flows to the device")


def decode_provision(
    payload: bytes, *, loads: Loads = json.loads
) -> ProvisionRequest | Undecodable:
    """A provisioning request ({"provisionDeviceKey", "provisionDeviceSecret", "deviceName"})."""
    try:
        request = loads(payload)
    except (ValueError, RecursionError) as exc:
        return Undecodable("bad_provision_request", str(exc))
    if not isinstance(request, dict):
        return Undecodable("bad_provision_request", "expected a JSON object")
    return ProvisionRequest(
        request.get("provisionDeviceKey", ""),
        request.get("provisionDeviceSecret", ""),
        request.get("deviceName", ""),
    )


def json_object(payload: bytes, *, loads: Loads = json.loads) -> dict[str, Any] | Undecodable:
    """A storable JSON object, or why not."""
    try:
        value = loads(payload)
    except (ValueError, RecursionError) as exc:
        return Undecodable("malformed_json", f"not JSON: {exc}")
    if not isinstance(value, dict):
        return Undecodable("wrong_type", "expected a JSON object")
    # orjson reads 1,024 levels and writes 254: what cannot be stored again stops here.
    if problem := unstorable(value):
        return Undecodable("unstorable_json", problem)
    return value


def _chunk_request(topic: Topic, payload: bytes) -> OtaChunkRequest | Undecodable:
    # The payload is the chunk size as text (ThingsBoard's devices send e.g. "65536").
    text = payload.decode("ascii", "replace").strip()
    if not (0 < len(text) <= 9 and text.isascii() and text.isdigit()) or int(text) == 0:
        return Undecodable("bad_chunk_request", "the payload is the chunk size in bytes")
    assert topic.command_id is not None
    assert topic.chunk is not None
    assert topic.package
    return OtaChunkRequest(topic.package, topic.command_id, topic.chunk, int(text))


def _status_of(payload: bytes, loads: Loads) -> str | None:
    text = payload.decode("utf-8", "replace").strip()
    if text.startswith("{"):
        try:
            value = loads(payload)
        except (ValueError, RecursionError):
            return None
        text = str(value.get("status", "")) if isinstance(value, dict) else ""
    text = text.strip('"').lower()
    return text if text in ("online", "offline") else None


def _attribute_request(request_id: str, request: dict[str, Any]) -> AttributeRequest:
    # {"clientKeys": "a,b", "sharedKeys": "c"}; neither field: both scopes, every key.
    neither = not ({"clientKeys", "sharedKeys"} & request.keys())
    return AttributeRequest(
        request_id,
        client=neither or "clientKeys" in request,
        client_keys=_key_list(request.get("clientKeys")),
        shared=neither or "sharedKeys" in request,
        shared_keys=_key_list(request.get("sharedKeys")),
    )


def _key_list(value: Any) -> frozenset[str] | None:
    if isinstance(value, str) and value.strip():
        return frozenset(k.strip() for k in value.split(",") if k.strip())
    if isinstance(value, list):
        return frozenset(str(k) for k in value)
    return None


_UP_CHANNEL: dict[type, Channel] = {
    Telemetry: Channel.TELEMETRY,
    DexUpload: Channel.DEX,
    ClientAttributes: Channel.ATTRIBUTES,
}


def encode_device(
    message: DeviceMessage, device_id: str, family: Family, *, dumps: Dumps = _dumps
) -> tuple[str, bytes] | None:
    """What a device publishes for a message (its SDK's side); None if it has no such form."""
    thingsboard = family is Family.THINGSBOARD
    tb = topics.THINGSBOARD_PREFIX
    try:
        match message:
            case Telemetry() | DexUpload() | ClientAttributes():
                channel = _UP_CHANNEL[type(message)]
                topic = (
                    Topic(channel, None).render()
                    if thingsboard
                    else topics.native(device_id, channel)
                )
                if isinstance(message, ClientAttributes):
                    return topic, dumps(message.values)
                return topic, message.payload
            case Event() if not thingsboard:
                return topics.native(device_id, Channel.EVENTS), message.payload
            case Status() if not thingsboard:
                return topics.native(device_id, Channel.STATUS), message.status.encode()
            case CommandResult() if thingsboard == message.thingsboard:
                if thingsboard:
                    return f"{tb}/rpc/response/{message.command_id}", dumps(message.body)
                topic = topics.native(device_id, Channel.COMMAND_RESULT, message.command_id)
                return topic, dumps(message.body)
            case AttributeRequest() if thingsboard:
                request: dict[str, str] = {}
                if message.client:
                    request["clientKeys"] = ",".join(sorted(message.client_keys or ()))
                if message.shared:
                    request["sharedKeys"] = ",".join(sorted(message.shared_keys or ()))
                return f"{tb}/attributes/request/{message.request_id}", dumps(request)
            case RpcRequest() if thingsboard:
                body = {"method": message.method, "params": message.params}
                return f"{tb}/rpc/request/{message.request_id}", dumps(body)
            case OtaChunkRequest() if thingsboard:
                topic = f"v2/{message.package}/request/{message.request_id}/chunk/{message.chunk}"
                return topic, str(message.size).encode()
            case ProvisionRequest():
                body = {
                    "provisionDeviceKey": message.provision_key,
                    "provisionDeviceSecret": message.provision_secret,
                    "deviceName": message.device_name,
                }
                return topics.PROVISION_REQUEST, dumps(body)
    except TopicError:  # a device or command id the topic grammar refuses
        return None
    return None


# -- outbound: what the platform says back -----------------------------------------------


@dataclass(frozen=True, slots=True)
class Command:
    """A command for the device (ThingsBoard: a server-side RPC with its numeric id)."""

    families: ClassVar[tuple[Family, ...]] = (Family.NATIVE, Family.THINGSBOARD)
    retain: ClassVar[bool] = False
    command_id: str
    method: str
    params: Any
    rpc_id: int | None = None


@dataclass(frozen=True, slots=True)
class DesiredConfig:
    """The device's desired configuration (shared attributes), retained on its config topic."""

    families: ClassVar[tuple[Family, ...]] = (Family.NATIVE,)
    retain: ClassVar[bool] = True
    shared: dict[str, Any]
    version: int


@dataclass(frozen=True, slots=True)
class AttributeUpdate:
    """ThingsBoard: shared attributes changed (and which were deleted)."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    values: dict[str, Any]
    deleted: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class AttributeReply:
    """ThingsBoard: the answer to an attribute request (None: that scope was not asked)."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    request_id: str
    client: dict[str, Any] | None
    shared: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class RpcReply:
    """ThingsBoard: the answer to a client-side RPC."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    request_id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ProvisionReply:
    """The new device's access token, or why there is none."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    token: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class OtaChunk:
    """ThingsBoard: one chunk of a package, raw bytes (empty past the end)."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    package: str
    request_id: str
    chunk: int
    data: bytes


@dataclass(frozen=True, slots=True)
class OtaChunkError:
    """ThingsBoard: a chunk request refused, its status as text ("NOT_FOUND",
    "PAYLOAD_TOO_LARGE", "FAILURE") on v2/fw/error, whatever the package kind, as
    ThingsBoard's own MQTT transport answers."""

    families: ClassVar[tuple[Family, ...]] = (Family.THINGSBOARD,)
    retain: ClassVar[bool] = False
    status: str


OutboundMessage = (
    Command
    | DesiredConfig
    | AttributeUpdate
    | AttributeReply
    | RpcReply
    | ProvisionReply
    | OtaChunk
    | OtaChunkError
)


def encode(
    message: OutboundMessage, device_id: str, family: Family, *, dumps: Dumps = _dumps
) -> tuple[str, bytes] | None:
    """(topic, payload) of a message for this device on these topics; None if it has none."""
    if family not in message.families:
        return None
    try:
        return _encode(message, device_id, family, dumps)
    except TopicError:  # a device id the topic grammar refuses
        return None


def _encode(
    message: OutboundMessage, device_id: str, family: Family, dumps: Dumps
) -> tuple[str, bytes] | None:
    match message:
        case Command():
            body = {"method": message.method, "params": message.params}
            if family is Family.NATIVE:
                native = {"id": message.command_id, **body}
                return topics.native(device_id, Channel.COMMANDS), dumps(native)
            if message.rpc_id is None:
                return None
            return f"{topics.TB_RPC_REQUEST}{message.rpc_id}", dumps(body)
        case DesiredConfig():
            config = {"shared": message.shared, "version": message.version}
            return topics.native(device_id, Channel.CONFIG), dumps(config)
        case AttributeUpdate():
            update: dict[str, Any] = dict(message.values)
            if message.deleted:
                update["deleted"] = list(message.deleted)
            return topics.TB_ATTRIBUTE_UPDATES, dumps(update)
        case AttributeReply():
            answer: dict[str, Any] = {}
            if message.client is not None:
                answer["client"] = message.client
            if message.shared is not None:
                answer["shared"] = message.shared
            return f"{topics.TB_ATTRIBUTE_RESPONSE}{message.request_id}", dumps(answer)
        case RpcReply():
            return f"{topics.TB_RPC_RESPONSE}{message.request_id}", dumps(message.body)
        case OtaChunk():
            return topics.ota_response(message.package, message.request_id, message.chunk), (
                message.data
            )
        case OtaChunkError():
            return topics.OTA_ERROR, message.status.encode()
        case ProvisionReply():
            reply: dict[str, Any] = (
                {
                    "status": "SUCCESS",
                    "credentialsType": "ACCESS_TOKEN",
                    "credentialsValue": message.token,
                }
                if message.token is not None
                else {"status": "FAILURE", "errorMsg": message.error or "refused"}
            )
            return topics.PROVISION_RESPONSE, dumps(reply)
    return None  # pragma: no cover - the match is exhaustive
