"""The agent's proofs against the real platform: zero lost, zero duplicated.

Each test runs `fleetcore serve` (SQLite, embedded broker) and `fleetcore-agent` as
subprocesses. The agent numbers its readings ("seq", assigned in the same transaction that
queues the reading), so "produced" is the counter in its queue file and the platform's
stored readings must be exactly 1..produced, once each.
"""

from __future__ import annotations

import signal
from pathlib import Path

from tests.support.agent_rig import (
    Platform,
    Proxy,
    agent_config,
    assert_exactly_once,
    running,
)
from tests.support.http_clients import local_client
from tests.support.wait import wait_until


async def _platform(tmp_path: Path) -> tuple[Platform, str, str]:
    platform = Platform(tmp_path / "platform")
    await platform.prepare()
    await platform.start()
    device_id, token = await platform.new_device()
    return platform, device_id, token


async def test_platform_killed_and_restarted_mid_stream(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    agent = agent_config(
        tmp_path, "agent", device_id=device_id, token=token, mqtt_port=platform.mqtt_port
    )
    with running(agent, platform):
        agent.start()
        await wait_until(lambda: len(platform.stored()) >= 50, within=30)
        platform.kill()
        down_at = agent.meta("produced")
        await wait_until(lambda: agent.meta("produced") >= down_at + 100, within=30)
        await platform.start()
        back_at = agent.meta("produced")
        await wait_until(lambda: len(platform.stored()) >= back_at + 50, within=30)
        await agent.drain()
        produced = assert_exactly_once(platform, agent)
    assert produced >= back_at + 50


async def test_network_cut_and_restored(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    proxy = Proxy(platform.mqtt_port)
    proxy.open()
    agent = agent_config(tmp_path, "agent", device_id=device_id, token=token, mqtt_port=proxy.port)
    with running(agent, proxy, platform):
        agent.start()
        await wait_until(lambda: len(platform.stored()) >= 50, within=30)
        proxy.cut()
        cut_at = agent.meta("produced")
        await wait_until(lambda: agent.meta("produced") >= cut_at + 100, within=30)
        assert len(platform.stored()) <= cut_at + 1  # nothing got through the cut
        proxy.open()
        back_at = agent.meta("produced")
        await wait_until(lambda: len(platform.stored()) >= back_at + 50, within=30)
        proxy.cut()  # the drain goes straight to the broker
        agent.config_path.write_text(
            agent.config_path.read_text().replace(str(proxy.port), str(platform.mqtt_port))
        )
        await agent.drain()
        assert_exactly_once(platform, agent)


async def test_agent_killed_mid_backlog_and_restarted(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    proxy = Proxy(platform.mqtt_port)
    agent = agent_config(
        tmp_path,
        "agent",
        device_id=device_id,
        token=token,
        mqtt_port=proxy.port,
        batch_size=20,
        max_readings_per_s=100,
    )
    with running(agent, proxy, platform):
        agent.start()  # the path is cut from the start: a backlog builds up
        await wait_until(lambda: agent.meta("produced") >= 300, within=30)
        proxy.open()
        await wait_until(lambda: len(platform.stored()) >= 60, within=30)
        assert agent.backlog() > 0
        agent.signal(signal.SIGKILL)
        agent.start()
        killed_at = agent.meta("produced")
        await wait_until(lambda: len(platform.stored()) >= killed_at, within=60)
        await agent.drain()
        assert_exactly_once(platform, agent)


async def test_http_fallback_while_mqtt_unreachable(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    proxy = Proxy(platform.mqtt_port)
    agent = agent_config(
        tmp_path,
        "agent",
        device_id=device_id,
        token=token,
        mqtt_port=proxy.port,
        http_url=platform.base,
        http_fallback_after_s=0.5,
    )
    with running(agent, proxy, platform):
        agent.start()  # MQTT unreachable from the start
        await wait_until(lambda: len(platform.stored()) >= 100, within=30)
        proxy.open()  # MQTT returns; the agent moves back to it
        back_at = agent.meta("produced")
        await wait_until(lambda: len(platform.stored()) >= back_at + 50, within=30)
        await agent.drain()
        assert_exactly_once(platform, agent)


async def test_over_budget_the_oldest_are_dropped_and_reported_once(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    proxy = Proxy(platform.mqtt_port)
    agent = agent_config(
        tmp_path,
        "agent",
        device_id=device_id,
        token=token,
        mqtt_port=proxy.port,
        disk_budget_mb=0.01,  # about 140 readings
        batch_size=20,
    )
    with running(agent, proxy, platform):
        agent.start()  # the path is cut: the queue fills past its budget
        await wait_until(lambda: agent.meta("dropped") >= 100, within=30)
        proxy.open()
        headers = await platform.admin_headers()

        async def reported() -> bool:
            async with local_client(base_url=platform.base, headers=headers) as http:
                found = await http.get(f"/api/v1/devices/{device_id}/events")
            return any(e["type"] == "agent_readings_dropped" for e in found.json()["items"])

        await wait_until(reported, within=30, every=0.1)
        await agent.drain()
        dropped = agent.meta("dropped")
        produced = agent.meta("produced")
        assert agent.meta("dropped_unreported") == 0
        # Each dropped reading is reported once (drops can go on while the queue drains).
        async with local_client(base_url=platform.base, headers=headers) as http:
            found = (await http.get(f"/api/v1/devices/{device_id}/events")).json()["items"]
        reports = [e for e in found if e["type"] == "agent_readings_dropped"]
        assert sum(e["data"]["count"] for e in reports) == dropped
        assert {e["severity"] for e in reports} == {"warning"}
        # Every reading either arrived once or was counted as dropped; the newest all arrived
        # (the oldest were dropped, except a batch in flight at the time).
        stored = [int(v) for v in platform.stored()]
        assert len(stored) == len(set(stored)) == produced - dropped
        assert set(stored) <= set(range(1, produced + 1))
        assert set(range(produced - 50, produced + 1)) <= set(stored)
