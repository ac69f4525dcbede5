"""Brokers under test: ours (FleetBroker) and unmodified amqtt 0.12.1, behind one harness.

The defect tests run the same client scenario against both: ours must pass, and amqtt
0.12.1 must fail (strict xfail), which shows each test reproduces the defect it guards.
Both authenticate username = device key with a password, let a device use only
``devices/{key}/...`` topics, and record what devices publish.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.plugins.base import BaseAuthPlugin, BasePlugin, BaseTopicPlugin
from amqtt.session import ApplicationMessage, Session

from fleetcore.mqtt.broker import (
    BAD_USERNAME_PASSWORD,
    ClientInfo,
    FleetBroker,
    Inbound,
    Principal,
    Refused,
)
from fleetcore.mqtt.hooks import Verdict
from tests.support.mosquitto import PLATFORM, RECORDER, MosquittoServer
from tests.support.mqtt_raw import PUBLISH, RawClient

PASSWORDS = {"dev1": "pw1", "dev2": "pw2"}


@dataclass(frozen=True, slots=True)
class Device:
    key: str


@dataclass
class Harness:
    """A running broker: its port, what devices published, and a way to send to one."""

    port: int
    received: list[tuple[str, str, bytes]]
    broker: Any
    retained_store: dict[str, bytes] = field(default_factory=dict)

    platform: Any = None  # Mosquitto: the platform's own client, which sends to devices

    async def send(self, device: str, topic: str, payload: bytes, *, retain: bool = False) -> None:
        if self.platform is not None:
            await self.platform.publish(topic, payload, qos=1, retain=retain)
            return
        if isinstance(self.broker, FleetBroker):
            if retain:
                self.retained_store[topic] = payload
            self.broker.deliver(device, topic, payload, 1, retain=retain)
            return
        if retain:
            await self.broker.retain_message(None, topic, payload, 1)
        await self.broker.internal_message_broadcast(topic, payload, 1)

    def count(self, device: str) -> int:
        return sum(1 for who, _, _ in self.received if who == device)


class MemoryHooks:
    """The application side for FleetBroker tests: in-memory, with a durability gate."""

    def __init__(self, received: list[tuple[str, str, bytes]], retained: dict[str, bytes]) -> None:
        self.received = received
        self.retained_store = retained
        self.gate: asyncio.Event | None = None  # when set: messages are durable once it opens
        self.events: list[tuple[str, str]] = []

    async def authenticate(self, client: ClientInfo) -> Principal:
        if client.username in PASSWORDS and PASSWORDS[client.username] == client.password:
            return Device(client.username)
        raise Refused(BAD_USERNAME_PASSWORD, "bad credentials")

    def may_subscribe(self, principal: Principal, topic_filter: str) -> bool:
        return topic_filter.startswith((f"devices/{principal.key}/", "v1/devices/me/"))

    def accept(self, principal: Principal, message: Inbound) -> Verdict:
        if not message.topic.startswith((f"devices/{principal.key}/", "v1/devices/me/")):
            self.events.append(("denied", message.topic))
            return 0x87  # not authorized (what an MQTT 5 client reads in its PUBACK)
        self.received.append((principal.key, message.topic, message.payload))
        if message.will:
            self.events.append(("will", message.topic))
        return self.gate.wait() if self.gate is not None else None  # type: ignore[return-value]

    async def retained(
        self, principal: Principal, topic_filter: str
    ) -> Sequence[tuple[str, bytes]]:
        prefix = f"devices/{principal.key}/"
        return [(t, p) for t, p in self.retained_store.items() if t.startswith(prefix)]

    async def subscribed(self, principal: Principal, topic_filter: str) -> None:
        self.events.append(("subscribed", topic_filter))

    async def connected(self, principal: Principal, client: ClientInfo) -> None:
        self.events.append(("connected", principal.key))

    async def disconnected(self, principal: Principal, *, abnormal: bool) -> None:
        self.events.append(("disconnected" + (" abnormally" if abnormal else ""), principal.key))


# -- unmodified amqtt, configured with plugins to the same policy ------------------------

_VANILLA_RECEIVED: list[tuple[str, str, bytes]] = []


class PasswordAuth(BaseAuthPlugin):
    async def authenticate(self, *, session: Session) -> bool | None:
        return PASSWORDS.get(session.username or "") == session.password


class OwnTopics(BaseTopicPlugin):
    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        if session is None or topic is None:
            return False
        return topic.startswith(f"devices/{session.username}/")


class Recorder(BasePlugin[Any]):
    async def on_broker_message_broadcast(
        self, *, client_id: str, message: ApplicationMessage
    ) -> None:
        session = self.context.get_session(client_id)
        who = session.username if session is not None else "?"
        _VANILLA_RECEIVED.append((who or "?", message.topic, bytes(message.data)))


def _listener(port: int) -> dict[str, Any]:
    return {"default": {"type": "tcp", "bind": f"127.0.0.1:{port}"}}


@asynccontextmanager
async def running(kind: str, port: int) -> AsyncIterator[Harness]:
    """Start `kind` ("fleet", "amqtt" or "mosquitto") on `port`; stop it afterwards."""
    if kind == "mosquitto":
        async with _mosquitto() as harness:
            yield harness
        return
    if kind == "fleet":
        received: list[tuple[str, str, bytes]] = []
        retained: dict[str, bytes] = {}
        hooks = MemoryHooks(received, retained)
        broker: Any = FleetBroker({"listeners": _listener(port)}, hooks)
        harness = Harness(port, received, broker, retained)
    else:
        _VANILLA_RECEIVED.clear()
        broker = Broker(
            {
                "listeners": _listener(port),
                "plugins": {
                    f"{__name__}.PasswordAuth": {},
                    f"{__name__}.OwnTopics": {},
                    f"{__name__}.Recorder": {},
                },
            }
        )
        harness = Harness(port, _VANILLA_RECEIVED, broker)
    await broker.start()
    try:
        yield harness
    finally:
        await broker.shutdown()


@asynccontextmanager
async def _mosquitto() -> AsyncIterator[Harness]:
    """Mosquitto, with a platform client that records what devices publish."""
    server = MosquittoServer(PASSWORDS)
    await asyncio.to_thread(server.start)
    received: list[tuple[str, str, bytes]] = []
    recorder = await RawClient.connected(
        server.port, "recorder", username=RECORDER[0], password=RECORDER[1]
    )
    assert await recorder.subscribe("devices/+/telemetry") == [1]
    sender = await RawClient.connected(
        server.port, "sender", username=PLATFORM[0], password=PLATFORM[1]
    )

    async def record() -> None:
        while True:
            message = await recorder.expect(PUBLISH, wait_s=3600)
            received.append((message.topic.split("/")[1], message.topic, message.payload))
            if message.qos:
                await recorder.puback(message.packet_id)

    task = asyncio.create_task(record())
    try:
        yield Harness(server.port, received, server, platform=sender)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await recorder.close()
        await sender.close()
        await asyncio.to_thread(server.stop)
