"""Commands and desired configuration, end to end: an operator on the REST API, the real
platform in between, the real agent answering (over MQTT, and over HTTP when MQTT is away)."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.support.agent_rig import AgentProcess, Platform, Proxy, agent_config, running
from tests.support.http_clients import local_client
from tests.support.wait import wait_until


async def _platform(tmp_path: Path) -> tuple[Platform, str, str]:
    platform = Platform(tmp_path / "platform")
    await platform.prepare()
    await platform.start()
    device_id, token = await platform.new_device()
    return platform, device_id, token


class Operator:
    """The REST API as an admin of the device's organization."""

    def __init__(self, platform: Platform, device_id: str, headers: dict[str, str]) -> None:
        self.http = local_client(base_url=platform.base, headers=headers, timeout=10)
        self.device = f"/api/v1/devices/{device_id}"

    async def __aenter__(self) -> Operator:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.http.aclose()

    async def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a command and wait for its answer."""
        body = {"method": method, "params": params or {}, "timeout_s": 30, "persistent": True}
        made = await self.http.post(f"{self.device}/commands", json=body)
        assert made.status_code == 201, made.text
        url = f"{self.device}/commands/{made.json()['id']}"
        answer: dict[str, Any] = {}

        async def answered() -> bool:
            answer.update((await self.http.get(url)).json())
            return answer["status"] in ("succeeded", "failed", "expired")

        await wait_until(answered, within=30, every=0.1)
        return answer

    async def attributes(self) -> dict[str, Any]:
        response = await self.http.get(f"{self.device}/attributes")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def _online(platform: Platform, agent: AgentProcess, operator: Operator) -> None:
    agent.start()

    async def reported() -> bool:
        return "agent_backlog" in (await operator.attributes())["client"]

    await wait_until(reported, within=30, every=0.1)


async def test_ping_set_interval_and_unknown_over_mqtt(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    agent = agent_config(
        tmp_path, "agent", device_id=device_id, token=token, mqtt_port=platform.mqtt_port,
        interval_s=1,
    )  # fmt: skip
    with running(agent, platform):
        async with Operator(platform, device_id, await platform.admin_headers()) as operator:
            await _online(platform, agent, operator)
            health = (await operator.attributes())["client"]
            assert {
                "agent_backlog",
                "agent_last_send_ts",
                "agent_reconnects",
                "agent_dropped",
            } <= set(health)

            ping = await operator.command("ping", {"hello": 1})
            assert ping["status"] == "succeeded", ping
            assert ping["result"]["pong"] is True
            assert ping["channel"] == "mqtt"

            changed = await operator.command("set_interval", {"interval_s": 0.5})
            assert changed["status"] == "succeeded", changed
            assert changed["result"] == {"interval_s": 0.5}

            refused = await operator.command("set_interval", {"interval_s": -3})
            assert refused["status"] == "failed"
            assert "interval_s" in refused["error"]

            unknown = await operator.command("self_destruct")
            assert unknown["status"] == "failed"
            assert "unknown method" in unknown["error"]

            reboot = await operator.command("reboot")
            assert reboot["result"] == {"rebooted": False, "simulated": True}

            fault = await operator.command(
                "inject_fault", {"sensor": "m", "key": "temperature", "fault": "spike"}
            )
            assert fault["status"] == "succeeded", fault


async def test_desired_configuration_is_applied_and_reported(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    agent = agent_config(
        tmp_path, "agent", device_id=device_id, token=token, mqtt_port=platform.mqtt_port,
        interval_s=1,
    )  # fmt: skip
    with running(agent, platform):
        async with Operator(platform, device_id, await platform.admin_headers()) as operator:
            await _online(platform, agent, operator)
            desired = {"interval_s": 0.25, "batch_size": 40, "firmware": "2.0"}
            put = await operator.http.put(f"{operator.device}/attributes/shared", json=desired)
            assert put.status_code == 200, put.text

            async def in_sync() -> bool:
                client = (await operator.attributes())["client"]
                return bool(client.get("interval_s") == 0.25 and client.get("batch_size") == 40)

            await wait_until(in_sync, within=30, every=0.1)
            attributes = await operator.attributes()
            assert attributes["client"]["agent_config_version"] == attributes["shared_version"]
            states = {s["key"]: s["in_sync"] for s in attributes["desired_vs_reported"]}
            assert states["interval_s"]
            assert states["batch_size"]
            assert not states["firmware"]  # not the agent's to apply

            # A change made while the agent is stopped reaches it when it starts again.
            agent.signal(signal.SIGTERM)
            put = await operator.http.put(
                f"{operator.device}/attributes/shared", json={"interval_s": 0.5}
            )
            assert put.status_code == 200
            agent.start()

            async def caught_up() -> bool:
                found = await operator.attributes()
                client = found["client"]
                return bool(client.get("agent_config_version") == found["shared_version"])

            await wait_until(caught_up, within=30, every=0.1)
            assert (await operator.attributes())["client"]["interval_s"] == 0.5

            applied = await operator.command(
                "apply_config", {"interval_s": "soon", "batch_size": 30}
            )
            assert applied["status"] == "succeeded", applied
            assert applied["result"]["applied"] == {"batch_size": 30}
            assert "interval_s" in applied["result"]["rejected"]


async def test_commands_over_http_while_mqtt_is_away(tmp_path: Path) -> None:
    platform, device_id, token = await _platform(tmp_path)
    proxy = Proxy(platform.mqtt_port)  # never opened: MQTT cannot connect
    agent = agent_config(
        tmp_path, "agent", device_id=device_id, token=token, mqtt_port=proxy.port,
        http_url=platform.base, http_fallback_after_s=0.2, interval_s=0.5,
    )  # fmt: skip
    with running(agent, proxy, platform):
        async with Operator(platform, device_id, await platform.admin_headers()) as operator:
            agent.start()
            await wait_until(lambda: len(platform.stored()) >= 2, within=30, every=0.1)
            ping = await operator.command("ping")
            assert ping["status"] == "succeeded", ping
            assert ping["channel"] == "http"

            async def health_over_http() -> bool:
                client = (await operator.attributes())["client"]
                return bool(client.get("agent_transport") == "http")

            await wait_until(health_over_http, within=30, every=0.1)
