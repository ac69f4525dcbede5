"""The embedded broker's guarantees, one test per amqtt 0.12.1 defect and then the rest.

Each defect test runs against our broker and against unmodified amqtt 0.12.1; the amqtt
run is a strict xfail: if it ever passes, the defect is gone upstream and our override can
shrink. Clients are raw MQTT 3.1.1 (tests/support/mqtt_raw.py), so every packet is ours.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.support.brokers import Harness, MemoryHooks, running
from tests.support.mqtt_raw import PUBACK, PUBLISH, RawClient, connect_packet, publish_packet
from tests.support.postgres import free_port
from tests.support.wait import wait_until

AMQTT = pytest.param(
    "amqtt",
    marks=pytest.mark.xfail(strict=True, reason="the amqtt 0.12.1 defect this test reproduces"),
)
# The reference (installed by `make system-deps`): each scenario is plain MQTT 3.1.1
# behaviour Mosquitto already has.
MOSQUITTO = "mosquitto"


@pytest.fixture(params=["fleet", AMQTT, MOSQUITTO])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    async with running(request.param, free_port()) as h:
        yield h
        await RawClient.close_all()


@pytest.fixture
async def fleet() -> AsyncIterator[Harness]:
    async with running("fleet", free_port()) as h:
        yield h
        await RawClient.close_all()


def hooks(h: Harness) -> MemoryHooks:
    return h.broker.hooks  # type: ignore[no-any-return]


async def no_publish_within(client: RawClient, seconds: float) -> bool:
    try:
        while True:
            p = await client.read(wait_s=seconds)
            if p.kind == PUBLISH:
                return False
    except TimeoutError:
        return True


# -- (1) a burst acknowledged and then a disconnect loses nothing -----------------------


async def test_defect1_acknowledged_burst_survives_disconnect(harness: Harness) -> None:
    total = 2000
    # A device on another machine: a blocking socket in a thread, as fast as it can go.
    acked = await asyncio.to_thread(blocking_burst, harness.port, total)
    assert acked == total
    await wait_until(lambda: harness.count("dev1") >= total, within=5)
    assert harness.count("dev1") == total


def blocking_burst(port: int, total: int) -> int:
    """CONNECT, publish `total` QoS 1 messages, read every PUBACK, close; returns the acks."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(connect_packet("burst", username="dev1", password="pw1"))
        assert sock.recv(4)[3] == 0
        sock.sendall(
            b"".join(
                publish_packet("devices/dev1/telemetry", b'{"n":%d}' % i, qos=1, packet_id=i + 1)
                for i in range(total)
            )
        )
        expected, received = 4 * total, bytearray()
        while len(received) < expected:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
        return len(received) // 4  # each PUBACK is 4 bytes


# -- (2) a refused CONNECT with a live client's id leaves that client alone -------------


@pytest.mark.parametrize("clean", [True, False])
async def test_defect2_wrong_password_does_not_disturb_the_genuine_client(
    harness: Harness, clean: bool
) -> None:
    genuine = await RawClient.connected(
        harness.port, "dev1-main", username="dev1", password="pw1", clean=clean
    )
    assert await genuine.subscribe("devices/dev1/commands") == [1]
    intruder = await RawClient.open(harness.port)
    code, _ = await intruder.connect("dev1-main", username="dev1", password="wrong", clean=clean)
    assert code in (4, 5)
    await harness.send("dev1", "devices/dev1/commands", b"still here?")
    message = await genuine.expect(PUBLISH, wait_s=3)
    assert message.payload == b"still here?"


# -- (3) retained messages only for the newcomer's own subscriptions --------------------


async def test_defect3_no_retained_message_of_another_device(harness: Harness) -> None:
    owner = await RawClient.connected(harness.port, "dev2-c", username="dev2", password="pw2")
    assert await owner.subscribe("devices/dev2/config") == [1]
    await harness.send("dev2", "devices/dev2/config", b'{"secret":"dev2 only"}', retain=True)
    assert (await owner.expect(PUBLISH)).payload == b'{"secret":"dev2 only"}'
    newcomer = await RawClient.connected(harness.port, "dev1-c", username="dev1", password="pw1")
    assert await no_publish_within(newcomer, 1.0)


# -- (4) unacknowledged QoS 1 messages are resent when a persistent session returns -----


async def test_defect4_unacknowledged_message_is_resent_on_reconnect(harness: Harness) -> None:
    first = await RawClient.connected(
        harness.port, "dev1-p", username="dev1", password="pw1", clean=False
    )
    assert await first.subscribe("devices/dev1/commands") == [1]
    await harness.send("dev1", "devices/dev1/commands", b'{"id":"c1"}')
    got = await first.expect(PUBLISH)
    assert got.payload == b'{"id":"c1"}'
    await first.close()  # no PUBACK: the message is still the broker's to deliver
    await asyncio.sleep(0.3)
    second = await RawClient.open(harness.port)
    code, present = await second.connect("dev1-p", username="dev1", password="pw1", clean=False)
    assert (code, present) == (0, True)
    again = await second.expect(PUBLISH, wait_s=3)
    assert again.payload == b'{"id":"c1"}'
    assert again.dup
    await second.puback(again.packet_id)


async def test_defect4_take_over_closes_the_old_connection(harness: Harness) -> None:
    old = await RawClient.connected(
        harness.port, "dev1-t", username="dev1", password="pw1", clean=False
    )
    assert await old.subscribe("devices/dev1/commands") == [1]
    new = await RawClient.connected(
        harness.port, "dev1-t", username="dev1", password="pw1", clean=False
    )
    assert await old.closed_by_peer(wait_s=3)
    await harness.send("dev1", "devices/dev1/commands", b"to the new one")
    assert (await new.expect(PUBLISH, wait_s=3)).payload == b"to the new one"


# -- (5) the PUBACK comes after the application has the message durably -----------------


@pytest.mark.parametrize("harness", ["fleet", AMQTT], indirect=True)  # Mosquitto: no hook
async def test_defect5_puback_waits_until_the_message_is_durable(harness: Harness) -> None:
    gate = asyncio.Event()
    if hasattr(harness.broker, "hooks"):
        hooks(harness).gate = gate
    client = await RawClient.connected(harness.port, "dev1-d", username="dev1", password="pw1")
    packet_id = await client.publish("devices/dev1/telemetry", b'{"t":1}', qos=1, wait=False)
    with pytest.raises(TimeoutError):
        await client.expect(PUBACK, wait_s=0.5)
    assert harness.count("dev1") == 1  # the application has it; it is not yet durable
    gate.set()
    assert (await client.expect(PUBACK, wait_s=3)).packet_id == packet_id


# -- (6) one device's credentials never take over another device's client id ------------


async def test_defect6_client_id_is_bound_to_the_device(harness: Harness) -> None:
    victim = await RawClient.connected(harness.port, "shared-id", username="dev1", password="pw1")
    assert await victim.subscribe("devices/dev1/commands") == [1]
    other = await RawClient.open(harness.port)
    await other.connect("shared-id", username="dev2", password="pw2")
    await harness.send("dev1", "devices/dev1/commands", b"for dev1")
    assert (await victim.expect(PUBLISH, wait_s=3)).payload == b"for dev1"


# -- the rest of the contract (our broker only) -----------------------------------------


async def test_device_messages_never_reach_other_clients(fleet: Harness) -> None:
    listener = await RawClient.connected(fleet.port, "l", username="dev2", password="pw2")
    assert await listener.subscribe("v1/devices/me/telemetry", "v1/devices/me/attributes") == [1, 1]
    talker = await RawClient.connected(fleet.port, "t", username="dev1", password="pw1")
    await talker.publish("v1/devices/me/telemetry", b'{"t":1}', qos=1)
    assert fleet.count("dev1") == 1
    assert await no_publish_within(listener, 0.5)


async def test_deliver_reaches_only_that_device_on_identical_topics(fleet: Harness) -> None:
    one = await RawClient.connected(fleet.port, "a", username="dev1", password="pw1")
    two = await RawClient.connected(fleet.port, "b", username="dev2", password="pw2")
    for client in (one, two):
        assert await client.subscribe("v1/devices/me/attributes") == [1]
    await fleet.send("dev1", "v1/devices/me/attributes", b'{"k":1}')
    assert (await one.expect(PUBLISH)).payload == b'{"k":1}'
    assert await no_publish_within(two, 0.5)


async def test_subscription_outside_own_topics_is_refused(fleet: Harness) -> None:
    client = await RawClient.connected(fleet.port, "s", username="dev1", password="pw1")
    codes = await client.subscribe(
        "devices/dev2/commands", "#", "devices/+/config", "devices/dev1/#"
    )
    assert codes == [0x80, 0x80, 0x80, 1]


async def test_will_goes_to_the_application_on_abnormal_end_only(fleet: Harness) -> None:
    will = ("devices/dev1/status", b"offline", 1, False)
    abrupt = await RawClient.connected(fleet.port, "w1", username="dev1", password="pw1", will=will)
    await abrupt.close()
    await wait_until(lambda: ("will", "devices/dev1/status") in hooks(fleet).events)
    hooks(fleet).events.clear()
    polite = await RawClient.connected(fleet.port, "w2", username="dev1", password="pw1", will=will)
    await polite.disconnect()
    await wait_until(lambda: ("disconnected", "dev1") in hooks(fleet).events)
    assert ("will", "devices/dev1/status") not in hooks(fleet).events


async def test_keepalive_expiry_closes_the_connection_and_fires_the_will(fleet: Harness) -> None:
    will = ("devices/dev1/status", b"offline", 1, False)
    silent = await RawClient.connected(
        fleet.port, "k", username="dev1", password="pw1", keepalive=1, will=will
    )
    assert await silent.closed_by_peer(wait_s=4)
    await wait_until(lambda: ("will", "devices/dev1/status") in hooks(fleet).events)


async def test_offline_persistent_session_gets_messages_on_reconnect(fleet: Harness) -> None:
    client = await RawClient.connected(
        fleet.port, "o", username="dev1", password="pw1", clean=False
    )
    assert await client.subscribe("devices/dev1/commands") == [1]
    await client.disconnect()
    await wait_until(lambda: ("disconnected", "dev1") in hooks(fleet).events)
    await fleet.send("dev1", "devices/dev1/commands", b"while away")
    back = await RawClient.connected(fleet.port, "o", username="dev1", password="pw1", clean=False)
    got = await back.expect(PUBLISH, wait_s=3)
    assert got.payload == b"while away"


async def test_clean_session_forgets_subscriptions(fleet: Harness) -> None:
    client = await RawClient.connected(fleet.port, "c", username="dev1", password="pw1")
    assert await client.subscribe("devices/dev1/commands") == [1]
    await client.disconnect()
    await wait_until(lambda: ("disconnected", "dev1") in hooks(fleet).events)
    assert fleet.broker.deliver("dev1", "devices/dev1/commands", b"x") == 0


async def test_drop_ends_every_connection_of_a_device(fleet: Harness) -> None:
    one = await RawClient.connected(fleet.port, "d1", username="dev1", password="pw1")
    two = await RawClient.connected(fleet.port, "d2", username="dev1", password="pw1")
    bystander = await RawClient.connected(fleet.port, "d3", username="dev2", password="pw2")
    assert await fleet.broker.drop("dev1") == 2
    assert await one.closed_by_peer(wait_s=3)
    assert await two.closed_by_peer(wait_s=3)
    assert not await bystander.closed_by_peer(wait_s=0.3)
    assert fleet.broker.connected_keys() == {"dev2"}


async def test_retained_config_arrives_on_subscribe(fleet: Harness) -> None:
    fleet.retained_store["devices/dev1/config"] = b'{"v":1}'
    client = await RawClient.connected(fleet.port, "r", username="dev1", password="pw1")
    assert await client.subscribe("devices/dev1/config") == [1]
    got = await client.expect(PUBLISH)
    assert (got.payload, got.retain) == (b'{"v":1}', True)


@pytest.mark.parametrize("first", [b"GET / HTTP/1.1\r\n\r\n", b"\xc0\x00", b"\x10\x05MQT"])
async def test_anything_but_a_connect_first_is_closed(fleet: Harness, first: bytes) -> None:
    # The truncated CONNECT waits this long, not forever.
    fleet.broker.gate.limits = replace(fleet.broker.gate.limits, connect_timeout_s=1)
    client = await RawClient.open(fleet.port)
    await client.send(first)
    assert await client.closed_by_peer(wait_s=3)
    assert hooks(fleet).events == []
    ok = await RawClient.connected(fleet.port, "after", username="dev1", password="pw1")
    await ok.publish("devices/dev1/telemetry", b"{}", qos=1)
