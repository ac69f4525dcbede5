"""The contract between the broker (moves packets) and the application (decides)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fleetcore.device_messages import ports as device_messages_ports
from fleetcore.mqtt.mqtt311 import (
    BAD_USERNAME_PASSWORD,
    IDENTIFIER_REJECTED,
    NOT_AUTHORIZED,
    SERVER_UNAVAILABLE,
    UNACCEPTABLE_PROTOCOL_VERSION,
)

__all__ = [
    "BAD_USERNAME_PASSWORD",
    "IDENTIFIER_REJECTED",
    "NOT_AUTHORIZED",
    "SERVER_UNAVAILABLE",
    "UNACCEPTABLE_PROTOCOL_VERSION",
    "BrokerHooks",
    "ClientInfo",
    "Inbound",
    "Principal",
    "Provisional",
    "Refused",
    "Verdict",
]

# What accept() answers (the device-message layer's answer): something to await until the
# message is durable, nothing (done), or an MQTT 5 reason code saying why it was refused.
Verdict = device_messages_ports.Verdict


class Principal(Protocol):
    """Who is connected: `key` names them (a device id); sessions are keyed by it."""

    @property
    def key(self) -> str: ...


@runtime_checkable
class Provisional(Protocol):
    """A principal let in for one short errand (provisioning): the broker counts it apart
    from devices (a smaller limit) and closes its connection after `lifetime_s`."""

    @property
    def lifetime_s(self) -> float: ...


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """What a CONNECT says about the client."""

    client_id: str
    username: str | None
    password: str | None
    clean_session: bool  # MQTT 5: clean start
    remote: str
    protocol: int = 4  # 4 = MQTT 3.1.1, 5 = MQTT 5.0


@dataclass(frozen=True, slots=True)
class Inbound:
    """One PUBLISH (or last will) from an authenticated client."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    will: bool = False


class Refused(Exception):
    """Authentication refused; `code` is the CONNACK return code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class BrokerHooks(Protocol):
    """What the application decides; the broker only moves packets."""

    async def authenticate(self, client: ClientInfo) -> Principal:
        """The principal behind these credentials, or raise Refused."""
        ...

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        """Whether this principal may subscribe to this filter."""
        ...

    def accept(self, principal: Principal, message: Inbound) -> Verdict:
        """Take a message, synchronously and in order; return what to await before acking.

        Must not raise: a message the application cannot use becomes its own record
        (a dead letter) and the answer is an MQTT 5 reason code (e.g. 0x97 quota exceeded)
        that MQTT 5 clients get in their PUBACK; MQTT 3.1.1 clients are acknowledged plainly.
        """
        ...

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        """Retained (topic, payload) pairs for a new subscription of this principal."""
        ...

    async def subscribed(self, principal: Principal, topic_filter: str) -> None:
        """A subscription was granted (after its SUBACK and retained messages)."""
        ...

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        """A connection was accepted."""
        ...

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        """A connection ended: once for every `connected`. A connection taken over by a new
        one (same client id) is reported ended, not abnormal, just after its successor's
        `connected`, so a count of a device's connections never passes through zero."""
        ...
