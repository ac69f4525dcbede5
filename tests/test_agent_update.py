"""The agent updates itself from the platform and rolls itself back, in real processes.

The platform is `fleetcore serve`: the new version is uploaded as a software package
(POST /api/v1/ota/packages, signed with the organization's key in one case), a rollout
assigns it to the agent's device, the agent learns it as shared attributes, downloads it
from /api/v1/devices/me/ota/software, and its sw_state comes back as client attributes
that move the device's row in the rollout. The agent runs as the shipped systemd unit would
run it (tests/support/agent_update_rig.Service), from a versions layout made by the shipped
install.sh; the new versions are real wheels built offline.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.agent_rig import (
    AgentProcess,
    Platform,
    Proxy,
    agent_config,
    assert_exactly_once,
    running,
)
from tests.support.agent_update_rig import (
    DownloadGate,
    OtaApi,
    Service,
    agent_wheel,
    crashing_agent_wheel,
    install_first,
    signing_key,
    uv,
    wheelhouse,
)
from tests.support.http_clients import local_client
from tests.support.wait import wait_until

OLD, NEW, BROKEN = "0.1.0", "0.1.1", "0.2.0"
TITLE = "fleetcore-agent"
CHUNK = 4096


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The first install's wheels, and the packages of the updates (built once)."""
    tmp = tmp_path_factory.mktemp("wheels")
    house = wheelhouse(tmp / "house")
    return {
        "first": [agent_wheel(tmp, OLD), *house],
        NEW: agent_wheel(tmp, NEW).read_bytes(),
        BROKEN: crashing_agent_wheel(tmp / "broken", BROKEN).read_bytes(),
    }


@dataclass
class Rig:
    """A platform, a device, an install of the old version and its service."""

    tmp: Path
    platform: Platform
    agent: AgentProcess
    root: Path
    device_id: str
    proxy: Proxy
    service: Service
    ota: OtaApi

    def current(self) -> str:
        return os.readlink(self.root / "current")

    def versions(self) -> set[str]:
        return {p.name for p in (self.root / "versions").iterdir()}

    def configure(self, **update: Any) -> None:
        values = yaml.safe_load(self.agent.config_path.read_text())
        values["update"].update(update)
        self.agent.config_path.write_text(yaml.safe_dump(values))

    async def client(self) -> dict[str, Any]:
        headers = await self.platform.admin_headers()
        async with local_client(base_url=self.platform.base, headers=headers) as http:
            got = await http.get(f"/api/v1/devices/{self.device_id}/attributes")
            assert got.status_code == 200, got.text
            client: dict[str, Any] = got.json()["client"]
            return client

    def reported(self, **expected: Any) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            client = await self.client()
            return all(client.get(k) == v for k, v in expected.items())

        return check

    def in_rollout(self, rollout_id: str, **expected: Any) -> Callable[[], Awaitable[bool]]:
        """The rollout's status and this device's row are as expected."""

        async def check() -> bool:
            body = await self.ota.rollout(rollout_id)
            row = next(r for r in body["device_rows"] if r["device_id"] == self.device_id)
            return all(
                (body if key == "status" else row).get(key) == value
                for key, value in expected.items()
            )

        return check

    def log(self) -> str:
        return (self.tmp / "service.log").read_text()[-4000:]


@pytest.fixture
async def rig(tmp_path: Path, wheels: dict[str, Any]) -> AsyncIterator[Rig]:
    platform = Platform(tmp_path / "platform", FLEETCORE_OTA_JOB_INTERVAL_S="0.2")

    async def serving() -> None:
        await platform.prepare()
        await platform.start()

    # The first install (a virtualenv) and the platform's start overlap: each takes seconds.
    try:
        (root, state), _ = await asyncio.gather(
            asyncio.to_thread(install_first, tmp_path, wheels["first"]), serving()
        )
        device_id, token = await platform.new_device()
    except BaseException:  # not left running (the rig below stops it otherwise)
        platform.stop()
        raise
    proxy = Proxy(platform.mqtt_port)
    proxy.open()
    agent = agent_config(
        tmp_path,
        state.name,  # the queue lives in install.sh's state directory
        device_id=device_id,
        token=token,
        mqtt_port=proxy.port,
        interval_s=0.05,
        update={
            "root": str(root),
            "url": platform.base,
            "installer": uv(),
            "offline": True,
            "chunk_size": CHUNK,
            "retry_s": 0.1,
            "health_deadline_s": 30,
            "max_trial_starts": 2,
        },
    )
    service = Service(root, agent.config_path, tmp_path / "service.log")
    ota = OtaApi(platform.base, await platform.admin_headers())
    found = Rig(tmp_path, platform, agent, root, device_id, proxy, service, ota)
    with running(agent, proxy, platform):
        try:
            yield found
        finally:
            service.stop()


async def _drained(rig: Rig) -> None:
    """Stop the service, empty the queue, and check every reading arrived exactly once."""
    rig.service.stop()
    await rig.agent.drain()
    assert_exactly_once(rig.platform, rig.agent)


async def test_a_signed_update_from_the_platform_resumes_after_a_kill_and_completes(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[NEW]
    signer, public = signing_key()
    await rig.ota.add_key(public)  # the organization signs its packages
    (rig.tmp / "ota.pub").write_bytes(public)
    uploaded = await rig.ota.upload(TITLE, NEW, package, signer)
    assert uploaded["signature"]
    chunks = -(-len(package) // CHUNK)
    gate = DownloadGate(rig.platform.base, hold_from=chunks // 2)  # half, then unreachable
    rig.configure(url=gate.base, public_key=str(rig.tmp / "ota.pub"))
    with gate.serving():
        rig.service.start()
        await wait_until(rig.reported(current_sw_title=TITLE, current_sw_version=OLD), within=30)
        queued_before = rig.agent.meta("produced")
        rollout_id = await rig.ota.roll_out(uploaded, rig.device_id)
        await wait_until(rig.in_rollout(rollout_id, state="downloading"), within=30)
        await wait_until(lambda: gate.requested.count(chunks // 2) >= 2, within=30)
        part = next((rig.agent.data_dir / "update").glob("*.part"))
        assert part.stat().st_size == (chunks // 2) * CHUNK

        rig.service.kill()  # the agent dies mid-download; "systemd" starts it again
        seen = len(gate.requested)
        gate.hold_from = None
        await wait_until(lambda: rig.current() == f"versions/{NEW}", within=60, every=0.05)
        after_restart = gate.requested[seen:]
        assert after_restart
        assert min(after_restart) == chunks // 2  # resumed, not from zero
        assert 0 not in after_restart

    await wait_until(
        rig.reported(sw_state="UPDATED", current_sw_version=NEW, sw_error=None), within=60
    )
    await wait_until(rig.in_rollout(rollout_id, status="completed", state="updated"), within=30)
    body = await rig.ota.rollout(rollout_id)
    assert body["counts"]["updated"] == 1
    assert body["failure_rate"] == 0
    assert os.readlink(rig.root / "previous") == f"versions/{OLD}"
    assert not (rig.root / "trial.json").exists()
    assert rig.versions() == {OLD, NEW}
    assert not list((rig.agent.data_dir / "update").glob("*.part"))
    assert 75 in rig.service.exits  # the old version exited for the restart
    assert rig.agent.meta("produced") > queued_before
    await _drained(rig)


async def test_tampered_or_badly_signed_package_fails_and_nothing_is_installed(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[NEW]
    signer, public = signing_key()
    _, stranger = signing_key()
    await rig.ota.add_key(public)
    (rig.tmp / "ota.pub").write_bytes(stranger)  # the agent trusts another key
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)

    # The stored bytes change after the upload (tampered with, or rotted, at rest): the
    # platform serves what the checksum it assigned does not name.
    first = await rig.ota.upload(TITLE, NEW, package, signer)
    stored = [p for p in (rig.platform.data_dir / "ota").rglob("*") if p.is_file()]
    assert len(stored) == 1, stored  # one package of one part
    data = bytearray(stored[0].read_bytes())
    data[100] ^= 0xFF
    stored[0].write_bytes(bytes(data))
    rollout_id = await rig.ota.roll_out(first, rig.device_id)
    await wait_until(rig.reported(sw_state="FAILED"), within=30)
    error = (await rig.client())["sw_error"]
    assert error.startswith("checksum mismatch"), error
    await wait_until(rig.in_rollout(rollout_id, state="failed"), within=30)
    await rig.ota.abort(rollout_id)

    # Intact bytes, signed by the organization's key, which the agent does not trust.
    rig.configure(public_key=str(rig.tmp / "ota.pub"))
    rig.service.kill()  # restarted with the key configured
    second = await rig.ota.upload(TITLE, "0.1.2", package, signer)
    rollout_id = await rig.ota.roll_out(second, rig.device_id)

    async def signature_failed() -> bool:
        return "signature mismatch" in str((await rig.client()).get("sw_error"))

    await wait_until(signature_failed, within=30)
    await wait_until(rig.in_rollout(rollout_id, state="failed"), within=30)

    assert rig.current() == f"versions/{OLD}"
    assert rig.versions() == {OLD}
    assert not (rig.root / "trial.json").exists()
    assert not list((rig.agent.data_dir / "update").glob("*.part"))
    assert 75 not in rig.service.exits
    assert (await rig.client())["current_sw_version"] == OLD
    await _drained(rig)


async def test_a_crashing_version_is_rolled_back_and_fails_the_rollout_with_the_queue_intact(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    uploaded = await rig.ota.upload(TITLE, BROKEN, wheels[BROKEN])
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)
    queued_before = rig.agent.meta("produced")
    rollout_id = await rig.ota.roll_out(uploaded, rig.device_id, max_failure_rate=0.5)

    async def failed() -> bool:
        client = await rig.client()
        return client.get("sw_state") == "FAILED" and "did not pass" in str(client.get("sw_error"))

    await wait_until(failed, within=60)
    assert rig.current() == f"versions/{OLD}"
    assert not (rig.root / "trial.json").exists()
    crashes = [code for code in rig.service.exits if code not in (0, 75, -9, -15)]
    assert len(crashes) == 2, (rig.service.exits, rig.log())  # max_trial_starts
    await wait_until(lambda: rig.versions() == {OLD}, within=10)  # the failed one is pruned

    # The platform counts it against the failure limit: the rollout pauses itself.
    await wait_until(rig.in_rollout(rollout_id, status="paused", state="failed"), within=30)
    body = await rig.ota.rollout(rollout_id)
    assert body["counts"]["failed"] == 1
    assert "reached the limit" in body["paused_reason"]
    assert "did not pass" in body["device_rows"][0]["error"]
    assert rig.agent.meta("produced") > queued_before
    await _drained(rig)


async def test_a_version_that_cannot_connect_rolls_itself_back_on_its_deadline(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    uploaded = await rig.ota.upload(TITLE, NEW, wheels[NEW])
    rig.configure(health_deadline_s=2)
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)
    rollout_id = await rig.ota.roll_out(uploaded, rig.device_id)
    await wait_until(rig.reported(sw_state="UPDATING"), within=60)
    await wait_until(lambda: (rig.root / "trial.json").exists(), within=60, every=0.02)
    rig.proxy.cut()  # the new version cannot reach the platform
    await wait_until(lambda: not (rig.root / "trial.json").exists(), within=30, every=0.05)
    assert rig.current() == f"versions/{OLD}"
    rig.proxy.open()

    async def failed() -> bool:
        client = await rig.client()
        return client.get("sw_state") == "FAILED" and "did not connect" in str(
            client.get("sw_error")
        )

    await wait_until(failed, within=30)
    client = await rig.client()
    assert client["current_sw_version"] == OLD
    assert rig.service.exits.count(75) >= 2  # the switch, then the rollback
    await wait_until(rig.in_rollout(rollout_id, state="failed"), within=30)
    await _drained(rig)
