"""The agent updates itself and rolls itself back, in real processes.

The platform is `fleetcore serve` (the assignment reaches the agent as shared attributes,
the agent's sw_state comes back as client attributes); packages download from a local
server that implements the OTA contract's route. The agent runs as the shipped systemd unit
would run it (tests/support/agent_update_rig.Service), from a versions layout made by the
shipped install.sh; the new versions are real wheels built offline.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.agent_rig import (
    AgentProcess,
    Platform,
    Proxy,
    agent_config,
    assert_exactly_once,
    running,
)
from tests.support.agent_update_rig import (
    OtaServer,
    Service,
    agent_wheel,
    attributes_for,
    crashing_agent_wheel,
    install_first,
    uv,
    wheelhouse,
)
from tests.support.http_clients import local_client
from tests.support.wait import wait_until

OLD, NEW, BROKEN = "0.1.0", "0.1.1", "0.2.0"
TITLE = "fleetcore-agent"


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
    """A platform, a device, an install of the old version, its service and the OTA route."""

    tmp: Path
    platform: Platform
    agent: AgentProcess
    root: Path
    device_id: str
    proxy: Proxy
    ota: OtaServer
    service: Service

    def current(self) -> str:
        return os.readlink(self.root / "current")

    def versions(self) -> set[str]:
        return {p.name for p in (self.root / "versions").iterdir()}

    def configure(self, **update: Any) -> None:
        values = yaml.safe_load(self.agent.config_path.read_text())
        values["update"].update(update)
        self.agent.config_path.write_text(yaml.safe_dump(values))

    async def assign(self, values: dict[str, Any]) -> None:
        headers = await self.platform.admin_headers()
        async with local_client(base_url=self.platform.base, headers=headers) as http:
            url = f"/api/v1/devices/{self.device_id}/attributes/shared"
            put = await http.put(url, json=values)
            assert put.status_code == 200, put.text

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

    def log(self) -> str:
        return (self.tmp / "service.log").read_text()[-4000:]


@pytest.fixture
async def rig(tmp_path: Path, wheels: dict[str, Any]) -> AsyncIterator[Rig]:
    root, state = install_first(tmp_path, wheels["first"])  # before a process to stop
    platform = Platform(tmp_path / "platform")
    await platform.prepare()
    try:
        await platform.start()
        device_id, token = await platform.new_device()
    except BaseException:  # not left running (the rig below stops it otherwise)
        platform.stop()
        raise
    proxy = Proxy(platform.mqtt_port)
    proxy.open()
    ota = OtaServer(token)
    agent = agent_config(
        tmp_path,
        state.name,  # the queue lives in install.sh's state directory
        device_id=device_id,
        token=token,
        mqtt_port=proxy.port,
        interval_s=0.05,
        update={
            "root": str(root),
            "url": ota.base,
            "installer": uv(),
            "offline": True,
            "chunk_size": 4096,
            "retry_s": 0.1,
            "health_deadline_s": 30,
            "max_trial_starts": 2,
        },
    )
    service = Service(root, agent.config_path, tmp_path / "service.log")
    found = Rig(tmp_path, platform, agent, root, device_id, proxy, ota, service)
    with ota.serving(), running(agent, proxy, platform):
        try:
            yield found
        finally:
            service.stop()


async def _drained(rig: Rig) -> None:
    """Stop the service, empty the queue, and check every reading arrived exactly once."""
    rig.service.stop()
    await rig.agent.drain()
    assert_exactly_once(rig.platform, rig.agent)


async def test_download_resumes_after_a_kill_and_the_update_switches_current(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[NEW]
    chunks = -(-len(package) // 4096)
    rig.ota.packages[(TITLE, NEW)] = package
    rig.ota.hold_from = chunks // 2  # half the file, then the platform is away
    rig.service.start()
    await wait_until(rig.reported(current_sw_title=TITLE, current_sw_version=OLD), within=30)
    await rig.assign(attributes_for(TITLE, NEW, package))
    await wait_until(rig.reported(sw_state="DOWNLOADING"), within=30)
    await wait_until(lambda: rig.ota.requested.count(chunks // 2) >= 2, within=30)
    part = next((rig.agent.data_dir / "update").glob("*.part"))
    assert part.stat().st_size == (chunks // 2) * 4096

    rig.service.kill()  # the agent dies mid-download; "systemd" starts it again
    seen = len(rig.ota.requested)
    rig.ota.hold_from = None
    await wait_until(lambda: rig.current() == f"versions/{NEW}", within=60, every=0.05)
    after_restart = rig.ota.requested[seen:]
    assert after_restart
    assert min(after_restart) == chunks // 2  # resumed, not from zero
    assert 0 not in after_restart

    await wait_until(
        rig.reported(sw_state="UPDATED", current_sw_version=NEW, sw_error=None), within=60
    )
    assert os.readlink(rig.root / "previous") == f"versions/{OLD}"
    assert not (rig.root / "trial.json").exists()
    assert rig.versions() == {OLD, NEW}
    assert not list((rig.agent.data_dir / "update").glob("*.part"))
    assert 75 in rig.service.exits  # the old version exited for the restart
    await _drained(rig)


async def test_tampered_or_badly_signed_package_fails_and_nothing_is_installed(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[NEW]
    signer, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    key = signer.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    (rig.tmp / "ota.pub").write_bytes(key)
    rig.configure(public_key=str(rig.tmp / "ota.pub"))
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)

    # The bytes served are not those the checksum names (a tampered or corrupted package).
    tampered = package[:100] + bytes([package[100] ^ 0xFF]) + package[101:]
    rig.ota.packages[(TITLE, NEW)] = tampered
    signature = base64.b64encode(signer.sign(tampered)).decode()
    await rig.assign(
        attributes_for(TITLE, NEW, package, sw_signature=signature, sw_signature_alg="ed25519")
    )
    await wait_until(rig.reported(sw_state="FAILED"), within=30)
    error = (await rig.client())["sw_error"]
    assert error.startswith("checksum mismatch"), error

    # Intact bytes, signed by another key than the one the agent trusts.
    rig.ota.packages[(TITLE, "0.1.2")] = package
    forged = base64.b64encode(stranger.sign(package)).decode()
    await rig.assign(
        attributes_for(TITLE, "0.1.2", package, sw_signature=forged, sw_signature_alg="ed25519")
    )

    async def signature_failed() -> bool:
        return "signature mismatch" in str((await rig.client()).get("sw_error"))

    await wait_until(signature_failed, within=30)

    assert rig.current() == f"versions/{OLD}"
    assert rig.versions() == {OLD}
    assert not (rig.root / "trial.json").exists()
    assert not list((rig.agent.data_dir / "update").glob("*.part"))
    assert 75 not in rig.service.exits
    assert (await rig.client())["current_sw_version"] == OLD
    await _drained(rig)


async def test_a_crashing_version_is_rolled_back_by_the_guard_with_the_queue_intact(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[BROKEN]
    rig.ota.packages[(TITLE, BROKEN)] = package
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)
    queued_before = rig.agent.meta("produced")
    await rig.assign(attributes_for(TITLE, BROKEN, package))

    async def failed() -> bool:
        client = await rig.client()
        return client.get("sw_state") == "FAILED" and "did not pass" in str(client.get("sw_error"))

    await wait_until(failed, within=60)
    assert rig.current() == f"versions/{OLD}"
    assert not (rig.root / "trial.json").exists()
    crashes = [code for code in rig.service.exits if code not in (0, 75, -9, -15)]
    assert len(crashes) == 2, (rig.service.exits, rig.log())  # max_trial_starts
    await wait_until(lambda: rig.versions() == {OLD}, within=10)  # the failed one is pruned
    assert rig.agent.meta("produced") > queued_before
    await _drained(rig)


async def test_a_version_that_cannot_connect_rolls_itself_back_on_its_deadline(
    rig: Rig, wheels: dict[str, Any]
) -> None:
    package: bytes = wheels[NEW]
    rig.ota.packages[(TITLE, NEW)] = package
    rig.configure(health_deadline_s=2)
    rig.service.start()
    await wait_until(rig.reported(current_sw_version=OLD), within=30)
    await rig.assign(attributes_for(TITLE, NEW, package))
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
    await _drained(rig)
