"""Mosquitto 2.0 + dynamic security + fleetcore_mount: ThingsBoard devices told apart.

Every ThingsBoard device uses v1/devices/me/...; the plugin mounts each one under
tb/{username}/ on the way up and unmounts the platform's tb/{username}/... on the way down
to that device alone. Dynamic security keeps the credentials and the per-device ACLs. The
negative checks end on a sentinel that travels the same path after the refused message, so
a test waits for an event instead of sleeping to prove that something did not arrive.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from tests.support.mosquitto_dynsec import Credentials, DynsecMosquitto, dynsec_mosquitto
from tests.support.paho_device import PahoDevice

SUCCESS, NO_SUBSCRIBERS, NOT_AUTHORIZED, ADMINISTRATIVE = 0, 0x10, 0x87, 0x98
TB_UP = "$share/fleetcore/tb/+/v1/devices/me/#"
NATIVE_UP = "$share/fleetcore/devices/#"


@pytest.fixture(scope="module")
async def broker() -> AsyncIterator[DynsecMosquitto]:
    async with dynsec_mosquitto() as running:
        yield running


@pytest.fixture
def clients() -> Iterator[list[PahoDevice]]:
    made: list[PahoDevice] = []
    yield made
    for client in made:
        client.stop()
        # paho closes its wake-up socket pair only in __del__; a client in a reference cycle
        # can reach the collector with them open (ResourceWarning, an error under pytest).
        client.client._reset_sockets()


async def add_device(broker: DynsecMosquitto) -> Credentials:
    """A device the way the platform adds one: a UUID username, a token password."""
    return await asyncio.to_thread(
        broker.add_device, str(uuid.uuid4()), f"fcd_{secrets.token_urlsafe(16)}"
    )


async def connect(
    clients: list[PahoDevice],
    broker: DynsecMosquitto,
    who: Credentials,
    *,
    mqtt5: bool = True,
    expect: int = SUCCESS,
    client_id: str | None = None,
) -> PahoDevice:
    client_id = client_id or f"{who.username[:8]}-{secrets.token_hex(4)}"
    client = PahoDevice(client_id, mqtt5=mqtt5)
    clients.append(client)
    connected = await client.connect(broker.port, username=who.username, password=who.password)
    if expect == SUCCESS:
        assert connected.data["reason"] == SUCCESS, broker.log()[-2000:]
    else:
        assert connected.data["reason"] >= 0x80
        client.client.reconnect_delay_set(60, 60)  # no retries during the test
    return client


async def refused_publish(
    clients: list[PahoDevice],
    broker: DynsecMosquitto,
    who: Credentials,
    topic: str,
    *,
    client_id: str | None = None,
) -> None:
    """On a connection of its own: Mosquitto 2.0.11 closes it after any refused PUBLISH."""
    client = await connect(clients, broker, who, client_id=client_id)
    client.client.reconnect_delay_set(60, 60)
    assert await client.publish(topic, b'{"forged": 1}') == NOT_AUTHORIZED, topic
    await client.next("disconnect")


async def platform(clients: list[PahoDevice], broker: DynsecMosquitto, *filters: str) -> PahoDevice:
    """The platform's ingest client (MQTT 5), subscribed to `filters`."""
    client = await connect(clients, broker, broker.platform)
    assert await client.subscribe(*filters) == [1] * len(filters)
    return client


async def message(client: PahoDevice) -> tuple[str, bytes]:
    received = (await client.next("message")).data
    return received["topic"], received["payload"]


@pytest.mark.parametrize("mqtt5", [True, False], ids=["mqtt5", "mqtt311"])
async def test_thingsboard_telemetry_reaches_the_platform_under_the_device_mount(
    broker: DynsecMosquitto, clients: list[PahoDevice], mqtt5: bool
) -> None:
    ingest = await platform(clients, broker, TB_UP)
    creds = await add_device(broker)
    device = await connect(clients, broker, creds, mqtt5=mqtt5)
    payload = b'{"temperature": 21.5, "note": "\xc3\xa9t\xc3\xa9"}'
    assert await device.publish("v1/devices/me/telemetry", payload) == SUCCESS
    assert await message(ingest) == (f"tb/{creds.username}/v1/devices/me/telemetry", payload)


async def test_a_device_does_not_receive_another_devices_thingsboard_publish(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    ingest = await platform(clients, broker, TB_UP)
    a, b = await add_device(broker), await add_device(broker)
    device_a = await connect(clients, broker, a)
    device_b = await connect(clients, broker, b, mqtt5=False)
    assert await device_b.subscribe("v1/devices/me/attributes") == [1]
    assert await device_a.publish("v1/devices/me/attributes", b'{"fw": "1.2"}') == SUCCESS
    assert await message(ingest) == (f"tb/{a.username}/v1/devices/me/attributes", b'{"fw": "1.2"}')
    # The sentinel follows the same route to B; A's publish, had it leaked, came first.
    assert await device_a.publish("v1/devices/me/telemetry", b"{}") == SUCCESS
    assert await message(ingest) == (f"tb/{a.username}/v1/devices/me/telemetry", b"{}")
    await ingest.publish(f"tb/{b.username}/v1/devices/me/attributes", b'{"sentinel": 1}')
    assert await message(device_b) == ("v1/devices/me/attributes", b'{"sentinel": 1}')


async def test_platform_rpc_reaches_only_the_named_device_and_its_answer_comes_back(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    ingest = await platform(clients, broker, TB_UP)
    a, b = await add_device(broker), await add_device(broker)
    device_a = await connect(clients, broker, a, mqtt5=False)
    device_b = await connect(clients, broker, b)
    for device in (device_a, device_b):
        assert await device.subscribe("v1/devices/me/rpc/request/+") == [1]

    request = b'{"method": "reboot", "params": {}}'
    # The plugin copies it to A and sinks the original: tb/ carries only what devices say.
    assert await ingest.publish(f"tb/{a.username}/v1/devices/me/rpc/request/7", request) == (
        NO_SUBSCRIBERS
    )
    delivered = (await device_a.next("message")).data
    assert (delivered["topic"], delivered["payload"], delivered["qos"], delivered["retain"]) == (
        "v1/devices/me/rpc/request/7",
        request,
        1,
        False,
    )
    assert await device_a.publish("v1/devices/me/rpc/response/7", b'{"ok": true}') == SUCCESS
    # The ingest subscription covers rpc/request/+ too: its next message is A's answer.
    assert await message(ingest) == (
        f"tb/{a.username}/v1/devices/me/rpc/response/7",
        b'{"ok": true}',
    )
    await ingest.publish(f"tb/{b.username}/v1/devices/me/rpc/request/8", b"{}")
    assert await message(device_b) == ("v1/devices/me/rpc/request/8", b"{}")


async def test_a_command_for_a_device_that_is_not_connected_is_dropped(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    ingest = await platform(clients, broker, TB_UP)
    creds = await add_device(broker)
    await ingest.publish(f"tb/{creds.username}/v1/devices/me/rpc/request/1", b"while away")
    device = await connect(clients, broker, creds)
    assert await device.subscribe("v1/devices/me/rpc/request/+") == [1]
    await ingest.publish(f"tb/{creds.username}/v1/devices/me/rpc/request/2", b"now")
    assert await message(device) == ("v1/devices/me/rpc/request/2", b"now")
    # Once it goes, it is forgotten again.
    device.stop()
    clients.remove(device)
    again = await connect(clients, broker, creds)
    await ingest.publish(f"tb/{creds.username}/v1/devices/me/rpc/request/3", b"before subscribe")
    assert await again.subscribe("v1/devices/me/rpc/request/+") == [1]
    await ingest.publish(f"tb/{creds.username}/v1/devices/me/rpc/request/4", b"after subscribe")
    assert await message(again) == ("v1/devices/me/rpc/request/4", b"after subscribe")


async def test_a_device_cannot_reach_into_another_devices_mount_or_topics(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    ingest = await platform(clients, broker, TB_UP, NATIVE_UP)
    a, b = await add_device(broker), await add_device(broker)
    device_a = await connect(clients, broker, a)
    assert await device_a.subscribe("tb/#", "tb/+/v1/devices/me/#", "#") == [NOT_AUTHORIZED] * 3
    for topic in (
        f"tb/{b.username}/v1/devices/me/telemetry",
        f"tb/{a.username}/v1/devices/me/telemetry",  # its own mount, written directly
        f"devices/{b.username}/telemetry",
    ):
        await refused_publish(clients, broker, a, topic)
    assert await device_a.publish(f"devices/{a.username}/telemetry", b'{"real": 1}') == SUCCESS
    assert await message(ingest) == (f"devices/{a.username}/telemetry", b'{"real": 1}')


async def test_wrong_password_is_refused(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    creds = await add_device(broker)
    await connect(clients, broker, Credentials(creds.username, "fcd_wrong"), expect=0x86)
    other = await add_device(broker)
    await connect(clients, broker, Credentials(creds.username, other.password), expect=0x86)
    await connect(clients, broker, creds)


async def test_a_disabled_client_is_refused_and_dropped(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    creds = await add_device(broker)
    connected = await connect(clients, broker, creds)
    connected.client.reconnect_delay_set(60, 60)
    await asyncio.to_thread(broker.ctrl, "disableClient", creds.username)
    assert (await connected.next("disconnect")).data["reason"] == ADMINISTRATIVE
    await connect(clients, broker, creds, expect=0x86)
    await asyncio.to_thread(broker.ctrl, "enableClient", creds.username)
    await connect(clients, broker, creds)


async def test_a_thingsboard_subscription_is_announced_to_the_platform(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    notices = await platform(clients, broker, "fleetcore/subscribed/+")
    creds = await add_device(broker)
    device = await connect(clients, broker, creds, mqtt5=False)
    # A native subscription says nothing; the ThingsBoard one after it is the next notice.
    assert await device.subscribe(f"devices/{creds.username}/commands") == [1]
    assert await device.subscribe("v1/devices/me/rpc/request/+") == [1]
    assert await message(notices) == (
        f"fleetcore/subscribed/{creds.username}",
        b"v1/devices/me/rpc/request/+",
    )


async def test_the_platform_administers_dynamic_security(broker: DynsecMosquitto) -> None:
    creds = await add_device(broker)
    listed = await asyncio.to_thread(broker.ctrl, "listClients", as_user=broker.platform)
    assert creds.username in listed.split()


async def test_dynsec_2_0_11_facts_the_platform_builds_on(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    """Pins what the platform's sync code is built on; an upgrade that changes it fails here."""
    user = f"probe-{secrets.token_hex(4)}"
    role = f"{user}-role"
    for args in (
        ("createRole", role),
        ("addRoleACL", role, "publishClientSend", "probe/%u/#", "allow"),
        ("addRoleACL", role, "publishClientSend", "probe/%c/#", "allow"),
        ("createClient", user, "-p", "pw"),
        ("addClientRole", user, role),
    ):
        await asyncio.to_thread(broker.ctrl, *args)
    probe, client_id = Credentials(user, "pw"), f"{user}-client"
    await refused_publish(clients, broker, probe, f"probe/{user}/x", client_id=client_id)
    await refused_publish(clients, broker, probe, f"probe/{client_id}/x", client_id=client_id)
    client = await connect(clients, broker, probe, client_id=client_id)
    assert await client.publish("probe/%u/x", b"1") == NO_SUBSCRIBERS  # literal only
    # A change to a role drops every client holding it (hence one role per device).
    client.client.reconnect_delay_set(60, 60)
    await asyncio.to_thread(broker.ctrl, "addRoleACL", role, "publishClientSend", "p/#", "allow")
    assert (await client.next("disconnect")).data["reason"] == ADMINISTRATIVE

    token = f"tok-{secrets.token_hex(8)}"  # ThingsBoard style: the token as username only
    await asyncio.to_thread(broker.ctrl, "createClient", token)  # no -p: no password
    await asyncio.to_thread(broker.ctrl, "addClientRole", token, role)
    refused = PahoDevice(f"tok-{secrets.token_hex(4)}")
    clients.append(refused)
    answer = await refused.connect(broker.port, username=token)
    refused.client.reconnect_delay_set(60, 60)
    assert answer.data["reason"] >= 0x80


async def test_restart_keeps_a_persistent_sessions_queued_messages(
    clients: list[PahoDevice],
) -> None:
    async with dynsec_mosquitto() as broker:
        creds = await add_device(broker)
        ingest_id = f"ingest-{secrets.token_hex(4)}"

        async def ingest() -> tuple[PahoDevice, bool]:
            client = PahoDevice(ingest_id)
            clients.append(client)
            connected = await client.connect(
                broker.port,
                username=broker.platform.username,
                password=broker.platform.password,
                clean_start=False,
                session_expiry=3600,
            )
            assert connected.data["reason"] == SUCCESS
            return client, bool(connected.data["present"])

        first, present = await ingest()
        assert not present
        assert await first.subscribe(TB_UP, NATIVE_UP) == [1, 1]
        first.stop()
        clients.remove(first)

        device = await connect(clients, broker, creds)
        assert await device.publish(f"devices/{creds.username}/telemetry", b'{"n": 1}') == SUCCESS
        assert await device.publish("v1/devices/me/telemetry", b'{"n": 2}') == SUCCESS
        device.client.reconnect_delay_set(60, 60)
        await asyncio.to_thread(broker.restart)

        back, present = await ingest()
        assert present
        received = {await message(back), await message(back)}
        assert received == {
            (f"devices/{creds.username}/telemetry", b'{"n": 1}'),
            (f"tb/{creds.username}/v1/devices/me/telemetry", b'{"n": 2}'),
        }


def test_the_plugin_logic_holds_for_a_hundred_thousand_devices(tmp_path: Path) -> None:
    """tests/support/mount_plugin_check.c: the plugin with stubbed broker calls, under ASan."""
    source = Path(__file__).parent / "support" / "mount_plugin_check.c"
    binary = tmp_path / "mount_plugin_check"
    flags = ["-O1", "-g", "-Wall", "-Wextra", "-Werror", "-fsanitize=address,undefined"]
    subprocess.run(["gcc", *flags, "-o", str(binary), str(source)], check=True, timeout=120)
    checked = subprocess.run([str(binary)], capture_output=True, text=True, timeout=60)
    assert (checked.returncode, checked.stdout) == (0, "ok\n"), checked.stderr


async def test_the_platforms_client_ids_are_refused_to_anyone_else(
    broker: DynsecMosquitto, clients: list[PahoDevice]
) -> None:
    """A device under `fleetcore-lane-fleetcore` would take the ordered lane's session (or a
    worker's) over: the plugin refuses it before dynamic security is asked."""
    device = await add_device(broker)
    for reserved in ("fleetcore-lane-fleetcore", "fleetcore-ingest-host-8101"):
        await connect(clients, broker, device, client_id=reserved, expect=NOT_AUTHORIZED)
    await connect(clients, broker, device, client_id="sensor-fleetcore-1")
    await connect(clients, broker, broker.platform, client_id="fleetcore-lane-test")
