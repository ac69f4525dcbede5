"""MQTT 5 on the embedded broker, with paho-mqtt 2's MQTT 5 client as the device.

The same sessions, ACL and guarantees as 3.1.1, plus what MQTT 5 can say: reason codes in
CONNACK, SUBACK, PUBACK and a server DISCONNECT, and session expiry.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.brokers import Harness, MemoryHooks, running
from tests.support.mqtt_raw import RawClient
from tests.support.paho_device import PahoDevice
from tests.support.postgres import free_port
from tests.support.wait import wait_until

SUCCESS, NOT_AUTHORIZED, BAD_CREDENTIALS, TAKEN_OVER, ADMINISTRATIVE = 0, 0x87, 0x86, 0x8E, 0x98


@pytest.fixture
async def fleet() -> AsyncIterator[Harness]:
    async with running("fleet", free_port()) as h:
        yield h
        await RawClient.close_all()


@pytest.fixture
def devices() -> list[PahoDevice]:
    made: list[PahoDevice] = []
    yield made  # type: ignore[misc]
    for device in made:
        device.stop()


def hooks(h: Harness) -> MemoryHooks:
    return h.broker.hooks  # type: ignore[no-any-return]


def device(devices: list[PahoDevice], client_id: str) -> PahoDevice:
    made = PahoDevice(client_id)
    devices.append(made)
    return made


async def test_connect_subscribe_publish_and_receive(
    fleet: Harness, devices: list[PahoDevice]
) -> None:
    one = device(devices, "v5-a")
    connected = await one.connect(fleet.port, username="dev1", password="pw1")
    assert connected.data["reason"] == SUCCESS
    assert connected.data["properties"].MaximumQoS == 1
    assert await one.subscribe("devices/dev1/commands", "devices/dev2/commands") == [
        1,
        NOT_AUTHORIZED,
    ]
    assert await one.publish("devices/dev1/telemetry", b'{"t": 1}') == SUCCESS
    assert fleet.count("dev1") == 1
    assert await one.publish("devices/dev2/telemetry", b'{"t": 1}') == NOT_AUTHORIZED
    await fleet.send("dev1", "devices/dev1/commands", b"do it")
    message = await one.next("message")
    assert (message.data["topic"], message.data["payload"]) == ("devices/dev1/commands", b"do it")


async def test_bad_credentials_get_a_reason_code(fleet: Harness, devices: list[PahoDevice]) -> None:
    intruder = device(devices, "v5-x")
    refused = await intruder.connect(fleet.port, username="dev1", password="wrong")
    assert refused.data["reason"] == BAD_CREDENTIALS
    assert hooks(fleet).events == []


async def test_take_over_tells_the_old_connection_why(
    fleet: Harness, devices: list[PahoDevice]
) -> None:
    first = device(devices, "v5-same")
    await first.connect(fleet.port, username="dev1", password="pw1")
    first.client.reconnect_delay_set(60, 60)  # do not fight back during the test
    second = device(devices, "v5-same")
    await second.connect(fleet.port, username="dev1", password="pw1")
    assert (await first.next("disconnect")).data["reason"] == TAKEN_OVER


async def test_drop_says_administrative_action(fleet: Harness, devices: list[PahoDevice]) -> None:
    one = device(devices, "v5-d")
    await one.connect(fleet.port, username="dev1", password="pw1")
    one.client.reconnect_delay_set(60, 60)
    assert await fleet.broker.drop("dev1") == 1
    assert (await one.next("disconnect")).data["reason"] == ADMINISTRATIVE


async def test_session_expiry_keeps_the_session_and_its_messages(
    fleet: Harness, devices: list[PahoDevice]
) -> None:
    one = device(devices, "v5-persist")
    await one.connect(
        fleet.port, username="dev1", password="pw1", clean_start=False, session_expiry=300
    )
    assert await one.subscribe("devices/dev1/commands") == [1]
    one.stop()
    await wait_until(lambda: ("disconnected", "dev1") in hooks(fleet).events)
    await fleet.send("dev1", "devices/dev1/commands", b"while away")
    again = device(devices, "v5-persist")
    back = await again.connect(
        fleet.port, username="dev1", password="pw1", clean_start=False, session_expiry=300
    )
    assert back.data["present"]
    assert (await again.next("message")).data["payload"] == b"while away"


async def test_no_session_expiry_forgets_the_session(
    fleet: Harness, devices: list[PahoDevice]
) -> None:
    one = device(devices, "v5-clean")
    await one.connect(fleet.port, username="dev1", password="pw1", clean_start=False)
    assert await one.subscribe("devices/dev1/commands") == [1]
    one.stop()
    await wait_until(lambda: ("disconnected", "dev1") in hooks(fleet).events)
    assert fleet.broker.deliver("dev1", "devices/dev1/commands", b"x") == 0


async def test_will_fires_on_an_abnormal_end(fleet: Harness, devices: list[PahoDevice]) -> None:
    one = device(devices, "v5-will")
    await one.connect(
        fleet.port, username="dev1", password="pw1", will=("devices/dev1/status", b"offline")
    )
    one.drop()
    await wait_until(lambda: ("will", "devices/dev1/status") in hooks(fleet).events)


async def test_puback_waits_for_durability_in_mqtt5_too(
    fleet: Harness, devices: list[PahoDevice]
) -> None:
    gate = asyncio.Event()
    hooks(fleet).gate = gate
    one = device(devices, "v5-gate")
    await one.connect(fleet.port, username="dev1", password="pw1")
    one.client.publish("devices/dev1/telemetry", b"{}", qos=1)
    with pytest.raises(TimeoutError):
        await one.next("publish", wait_s=0.5)
    gate.set()
    assert (await one.next("publish")).data["reason"] == SUCCESS


@pytest.mark.parametrize(("level", "name"), [(3, b"MQIsdp"), (6, b"MQTT")])
async def test_other_protocol_levels_are_refused(fleet: Harness, level: int, name: bytes) -> None:
    body = len(name).to_bytes(2, "big") + name + bytes([level, 0x02, 0, 60]) + b"\x00\x01c"
    client = await RawClient.open(fleet.port)
    await client.send(bytes([0x10, len(body)]) + body)
    connack = await client.read()
    assert (connack.kind, connack.body[-1]) == (2, 1)  # unacceptable protocol version
    assert await client.closed_by_peer(wait_s=3)
