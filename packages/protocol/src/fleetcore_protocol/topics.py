"""The MQTT topic grammar devices and the platform share.

Native topics carry the device id so an external broker can enforce ACLs per device:
``devices/{device_id}/telemetry`` and friends. ThingsBoard-compatible topics
(``v1/devices/me/...``) identify the device by its connection instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

NATIVE_PREFIX = "devices"
THINGSBOARD_PREFIX = "v1/devices/me"
MAX_DEVICE_ID_LENGTH = 64


class Channel(StrEnum):
    """What a message on a topic is about."""

    TELEMETRY = "telemetry"
    ATTRIBUTES = "attributes"
    EVENTS = "events"
    STATUS = "status"
    COMMANDS = "commands"
    COMMAND_RESULT = "command_result"
    CONFIG = "config"
    ATTRIBUTE_REQUEST = "attribute_request"  # ThingsBoard: v1/devices/me/attributes/request/{id}
    CLIENT_RPC = "client_rpc"  # ThingsBoard: v1/devices/me/rpc/request/{id} (device asks)
    DEX = "dex"  # a vending machine's DEX/EVA-DTS audit file, raw bytes
    OTA_CHUNK = "ota_chunk"  # ThingsBoard: v2/fw/request/{id}/chunk/{n} (device asks a chunk)


# Which way each channel flows: up (device to platform) or down.
UPSTREAM = frozenset(
    {
        Channel.TELEMETRY,
        Channel.ATTRIBUTES,
        Channel.EVENTS,
        Channel.STATUS,
        Channel.COMMAND_RESULT,
        Channel.ATTRIBUTE_REQUEST,
        Channel.CLIENT_RPC,
        Channel.DEX,
        Channel.OTA_CHUNK,
    }
)
# Upstream channels whose messages of one device must be handled in the order it sent them:
# two writes of one attribute, a write and the request for it that follows, status changes.
# (Telemetry, events and results carry their own times or ids; their order does not matter.)
ORDERED = frozenset({Channel.ATTRIBUTES, Channel.ATTRIBUTE_REQUEST, Channel.STATUS})


# ThingsBoard topics the platform publishes to a device (the device subscribes to these).
TB_ATTRIBUTE_UPDATES = f"{THINGSBOARD_PREFIX}/attributes"
TB_ATTRIBUTE_RESPONSE = f"{THINGSBOARD_PREFIX}/attributes/response/"
TB_RPC_REQUEST = f"{THINGSBOARD_PREFIX}/rpc/request/"
TB_RPC_RESPONSE = f"{THINGSBOARD_PREFIX}/rpc/response/"
# ThingsBoard device provisioning: a client connected as "provision" asks and is answered here.
PROVISION_REQUEST = "/provision/request"
PROVISION_RESPONSE = "/provision/response"
# ThingsBoard firmware (fw) and software (sw) packages in chunks: the device publishes the
# chunk size on v2/{fw|sw}/request/{request_id}/chunk/{n}, the bytes come back on
# v2/{fw|sw}/response/{request_id}/chunk/{n}.
OTA_PREFIXES = ("v2/fw/", "v2/sw/")
# A refused chunk request is answered here (ThingsBoard uses the firmware topic for both kinds).
OTA_ERROR = "v2/fw/error"
OTA_KINDS = ("fw", "sw")


def topic_matches(topic: str, topic_filter: str) -> bool:
    """Whether an MQTT topic matches a subscription filter (+ one level, # the rest)."""
    if topic.startswith("$") and topic_filter.startswith(("+", "#")):
        return False
    levels, parts = topic_filter.split("/"), topic.split("/")
    for index, level in enumerate(levels):
        if level == "#":
            return index == len(levels) - 1
        if index >= len(parts) or level not in ("+", parts[index]):
            return False
    return len(levels) == len(parts)


class TopicError(ValueError):
    """A topic outside the grammar; the message says why."""


@dataclass(frozen=True, slots=True)
class Topic:
    """A parsed topic: whose it is, which channel, and the command id for results."""

    channel: Channel
    device_id: str | None  # None for ThingsBoard topics: the connection names the device
    command_id: str | None = None  # also a chunk request's request id
    chunk: int | None = None  # OTA_CHUNK: which chunk
    package: str | None = None  # OTA_CHUNK: "fw" or "sw"

    def render(self) -> str:
        """The topic string (native form when a device id is known)."""
        if self.device_id is None:
            return _render_thingsboard(self)
        base = f"{NATIVE_PREFIX}/{self.device_id}"
        if self.channel is Channel.COMMAND_RESULT:
            return f"{base}/commands/{self.command_id}/result"
        return f"{base}/{self.channel.value}"


def _valid_segment(value: str) -> bool:
    return (
        0 < len(value) <= MAX_DEVICE_ID_LENGTH
        and not any(ch in value for ch in "+#/\x00")
        and value.isprintable()
    )


def native(device_id: str, channel: Channel, command_id: str | None = None) -> str:
    """Build a native topic; refuses ids that would break the grammar."""
    if not _valid_segment(device_id):
        raise TopicError(f"invalid device id {device_id!r}")
    if channel is Channel.COMMAND_RESULT and (command_id is None or not _valid_segment(command_id)):
        raise TopicError("a command result topic needs a valid command id")
    return Topic(channel, device_id, command_id).render()


def parse(topic: str) -> Topic:
    """Parse a native or ThingsBoard topic, or raise TopicError saying what is wrong."""
    if topic.startswith(THINGSBOARD_PREFIX + "/"):
        return _parse_thingsboard(topic[len(THINGSBOARD_PREFIX) + 1 :])
    if topic.startswith(OTA_PREFIXES):
        return _parse_ota(topic)
    parts = topic.split("/")
    if len(parts) < 3 or parts[0] != NATIVE_PREFIX:
        raise TopicError(f"not a Fleetcore topic: {topic!r}")
    device_id = parts[1]
    if not _valid_segment(device_id):
        raise TopicError(f"invalid device id in topic {topic!r}")
    rest = parts[2:]
    if len(rest) == 1:
        try:
            channel = Channel(rest[0])
        except ValueError:
            raise TopicError(f"unknown channel {rest[0]!r}") from None
        if channel is Channel.COMMAND_RESULT:
            raise TopicError(f"unknown channel {rest[0]!r}")
        return Topic(channel, device_id)
    if len(rest) == 3 and rest[0] == "commands" and rest[2] == "result" and _valid_segment(rest[1]):
        return Topic(Channel.COMMAND_RESULT, device_id, rest[1])
    raise TopicError(f"not a Fleetcore topic: {topic!r}")


_RPC_ID = re.compile(r"[0-9]{1,10}")
_TB_UP = {"telemetry": Channel.TELEMETRY, "attributes": Channel.ATTRIBUTES, "dex": Channel.DEX}
_TB_UP_WITH_ID = {
    ("rpc", "response"): Channel.COMMAND_RESULT,  # the device answers a server-side RPC
    ("rpc", "request"): Channel.CLIENT_RPC,  # the device asks the platform
    ("attributes", "request"): Channel.ATTRIBUTE_REQUEST,
}


def _parse_thingsboard(rest: str) -> Topic:
    if rest in _TB_UP:
        return Topic(_TB_UP[rest], None)
    parts = rest.split("/")
    # ASCII digits only: str.isdigit() also takes "²" and other scripts' digits.
    if len(parts) == 3 and _RPC_ID.fullmatch(parts[2]):
        channel = _TB_UP_WITH_ID.get((parts[0], parts[1]))
        if channel is not None:
            return Topic(channel, None, parts[2])
    raise TopicError(f"unsupported ThingsBoard topic: v1/devices/me/{rest!r}")


_CHUNK = re.compile(r"[0-9]{1,9}")


def _parse_ota(topic: str) -> Topic:
    # v2/{fw|sw}/request/{request_id}/chunk/{n}: request ids as ThingsBoard's (digits).
    parts = topic.split("/")
    if (
        len(parts) == 6
        and parts[1] in OTA_KINDS
        and parts[2] == "request"
        and _RPC_ID.fullmatch(parts[3])
        and parts[4] == "chunk"
        and _CHUNK.fullmatch(parts[5])
    ):
        return Topic(Channel.OTA_CHUNK, None, parts[3], chunk=int(parts[5]), package=parts[1])
    raise TopicError(f"unsupported OTA topic: {topic!r}")


def ota_response(package: str, request_id: str, chunk: int) -> str:
    """The topic a chunk is answered on."""
    if package not in OTA_KINDS or not _RPC_ID.fullmatch(request_id) or chunk < 0:
        raise TopicError("not an OTA chunk response")
    return f"v2/{package}/response/{request_id}/chunk/{chunk}"


def _render_thingsboard(topic: Topic) -> str:
    if topic.channel is Channel.TELEMETRY:
        return f"{THINGSBOARD_PREFIX}/telemetry"
    if topic.channel is Channel.ATTRIBUTES:
        return f"{THINGSBOARD_PREFIX}/attributes"
    if topic.channel is Channel.DEX:
        return f"{THINGSBOARD_PREFIX}/dex"
    if topic.channel is Channel.COMMANDS:
        return f"{THINGSBOARD_PREFIX}/rpc/request/{topic.command_id}"
    if topic.channel is Channel.COMMAND_RESULT:
        return f"{THINGSBOARD_PREFIX}/rpc/response/{topic.command_id}"
    raise TopicError(f"no ThingsBoard topic for {topic.channel.value}")


# -- per-client mount points on an external broker ----------------------------------------
#
# ThingsBoard topics are the same string for every device, so an external broker mounts each
# such client under its username (the device id): EMQX with a listener
# `mountpoint = "tb/${username}/"`, Mosquitto with Fleetcore's plugin (deploy/mosquitto).
# Upstream the platform sees `tb/{device_id}/v1/devices/me/telemetry`; it publishes
# `tb/{device_id}/v1/devices/me/rpc/request/7` and only that device receives
# `v1/devices/me/rpc/request/7`.
MOUNT_PREFIX = "tb"


# Fleetcore's Mosquitto plugin publishes the filter a mounted client subscribed to on
# `fleetcore/subscribed/{device_id}`: the platform learns a ThingsBoard device is listening.
SUBSCRIBED_NOTICE_PREFIX = "fleetcore/subscribed"


def subscribed_notice(topic: str) -> str | None:
    """The device id a plugin's subscription notice names; None for any other topic."""
    prefix, _, device_id = topic.rpartition("/")
    if prefix != SUBSCRIBED_NOTICE_PREFIX or not _valid_segment(device_id):
        return None
    return device_id


def mount(device_id: str, topic: str) -> str:
    """The broker-side topic of a mounted client's `topic`."""
    if not _valid_segment(device_id):
        raise TopicError(f"invalid device id {device_id!r}")
    return f"{MOUNT_PREFIX}/{device_id}/{topic}"


def unmount(topic: str) -> tuple[str, str]:
    """(device id, the topic as the device used it) of a mounted topic; TopicError if it
    is not one."""
    prefix, _, rest = topic.partition("/")
    device_id, _, inner = rest.partition("/")
    if prefix != MOUNT_PREFIX or not inner or not _valid_segment(device_id):
        raise TopicError(f"not a mounted topic: {topic!r}")
    return device_id, inner


def sender(topic: str) -> tuple[str, str]:
    """(device id, the topic as the device used it) of a topic an external broker hands the
    platform: a native topic names its device, a mounted one its client's username."""
    if topic.startswith(MOUNT_PREFIX + "/"):
        return unmount(topic)
    parsed = parse(topic)
    if parsed.device_id is None:  # an unmounted ThingsBoard topic: nobody to attribute it to
        raise TopicError(f"a ThingsBoard topic outside a mount point: {topic!r}")
    return parsed.device_id, topic


def ordered(topic: str) -> bool:
    """Whether a device's upstream topic (as the device used it: see `sender`) is on an
    ORDERED channel; False for a topic outside the grammar. Asked of every message an
    ingest worker takes: telemetry, the bulk, is told apart without parsing the topic again
    (every ORDERED topic names attributes or status)."""
    if "attribute" not in topic and not topic.endswith("/status"):
        return False
    try:
        return parse(topic).channel in ORDERED
    except TopicError:
        return False


def ordered_filters() -> list[str]:
    """The broker-side filters of every device's ORDERED topics: native, and the
    ThingsBoard ones under their mount (`tb/{device_id}/v1/devices/me/...`)."""
    native = [f"{NATIVE_PREFIX}/+/{channel.value}" for channel in sorted(ORDERED)]
    mounted = [
        f"{MOUNT_PREFIX}/+/{THINGSBOARD_PREFIX}/attributes",
        f"{MOUNT_PREFIX}/+/{THINGSBOARD_PREFIX}/attributes/request/+",
    ]
    return [*native, *mounted]
