"""The device-message layer's edges: what a transport offers it, and what it calls out to."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from fleetcore.devices.auth_cache import IngestDevice
from fleetcore_protocol.messages import Family, OutboundMessage

# What the layer answers for an inbound message: something to await until the message is
# durable, nothing (done), or an MQTT 5 reason code saying why it was refused (a transport
# acknowledges it anyway: one bad message never drops a connection).
Verdict = Awaitable[object] | int | None


class DeviceOutbox(Protocol):
    """How messages reach devices: the embedded broker, or an external broker's client."""

    def send(self, recipient: str, message: OutboundMessage) -> Family | None:
        """Send to that device's sessions alone (recipient: a device id, or a provisioning
        connection's key); returns the topic family that took it, None if nobody did."""
        ...

    def online(self) -> set[str]:
        """Ids of the devices connected now."""
        ...


class DeviceListener(Protocol):
    """What other parts of the platform hear of device connections (status, commands)."""

    async def device_connected(self, device: IngestDevice) -> None:
        """A device's connection was accepted."""
        ...

    async def device_disconnected(self, device: IngestDevice, *, abnormal: bool) -> None:
        """A device's connection ended (abnormal: without DISCONNECT; the will fired)."""
        ...

    async def device_subscribed(self, device: IngestDevice, topic_filter: str) -> None:
        """A device's subscription was granted (e.g. to its commands: time to send them)."""
        ...


# A command result from a device: (device, command id, body, ThingsBoard RPC?) -> MQTT 5
# reason code when refused, else None. The commands service provides it.
CommandResults = Callable[[IngestDevice, str, dict[str, Any], bool], Awaitable[int | None]]
# A DEX audit file from a device: (device, payload) -> None once stored (and accounted),
# else the dead letter's (reason, detail). The vending module provides it.
DexUploads = Callable[[IngestDevice, bytes], Awaitable[tuple[str, str] | None]]
# A chunk of the package assigned to a device: (device, "firmware"|"software", request id,
# chunk, size) -> the bytes (empty past the end), or the dead letter's (reason, detail). The
# OTA module provides it.
OtaChunks = Callable[[IngestDevice, str, str, int, int], Awaitable[bytes | tuple[str, str]]]


class RecordedResult(Protocol):
    """A command a device's result was recorded on (the commands domain's row)."""

    @property
    def id(self) -> uuid.UUID:
        """The command's id."""

    @property
    def status(self) -> str:
        """Its state now (succeeded or failed)."""


class ResultRecorder(Protocol):
    """The commands service taking a result over HTTP; raises the domain error that says why
    not (404 unknown, 409 not open, 413 too large, 422 not storable)."""

    async def __call__(
        self,
        device: IngestDevice,
        *,
        command_id: uuid.UUID | None = None,
        rpc_id: int | None = None,
        succeeded: bool,
        result: Any = None,
        error: str | None = None,
    ) -> RecordedResult:
        """The command, with the result recorded."""
        ...
