"""ThingsBoard's own device SDK (tb-mqtt-client 1.13.14, which connects with MQTT 5)
against the embedded broker: provisioning, session limits, telemetry, attributes, requests
and shared-attribute updates, with no change to the SDK.

The SDK ships a fork of paho under paho's package name, so it gets its own virtualenv,
built once with uv into .cache/ (CI fetches it from PyPI like every other dependency).
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.postgres import free_port
from tests.support.tenants import Tenant, make_tenant

# The SDK pip-installs mmh3 at import time when it is missing; install it up front.
SDK = ("tb-mqtt-client==1.13.14", "mmh3==5.2.0")
ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".cache" / "tb-mqtt-client-1.13.14"
SCRIPT = Path(__file__).parent / "support" / "tb_sdk_device.py"


def sdk_python() -> Path:
    """The SDK's virtualenv, made once (uv from PATH or the Makefile's .tools)."""
    python = VENV / "bin" / "python"
    installed = VENV / ".installed"  # written last: a half-made virtualenv is not taken
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with (VENV.parent / f"{VENV.name}.lock").open("w") as lock:
        # Two xdist workers may run this module's tests at once: one builds, the other waits.
        fcntl.flock(lock, fcntl.LOCK_EX)
        if installed.exists():
            return python
        uv = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
        env = {**os.environ, "VIRTUAL_ENV": str(VENV)}
        if not python.exists():
            subprocess.run(
                [uv, "venv", "-q", "--python", sys.executable, str(VENV)], check=True, env=env
            )
        subprocess.run(
            [uv, "pip", "install", "-q", "--python", str(python), *SDK],
            check=True,
            env=env,
            timeout=300,
        )
        installed.touch()
    return python


@pytest.fixture(scope="module")
def python() -> Path:
    return sdk_python()


@pytest.fixture
async def mqtt_app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    async with running_app(live_database, tmp_path, mqtt_port=free_port()) as application:
        yield application


async def test_thingsboard_sdk_device(
    python: Path, mqtt_app: FastAPI, live_database: Database
) -> None:
    async with client_for(mqtt_app) as http:
        org = await make_tenant(http, live_database)
        profile = await http.post(
            "/api/v1/device-profiles",
            headers=org.headers(Role.ADMIN),
            json={"name": f"sdk-{time.monotonic_ns()}", "provisioning_enabled": True},
        )
        assert profile.status_code == 201, profile.text
        body = profile.json()
        name = f"SDK-{time.monotonic_ns()}"
        process = await asyncio.create_subprocess_exec(
            str(python),
            str(SCRIPT),
            "provision",
            str(mqtt_app.state.settings.mqtt_port),
            body["provision_key"],
            body["provision_secret"],
            name,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await drive(process, http, org, name)
        finally:
            if process.returncode is None:
                process.kill()
            await process.wait()


async def drive(
    process: asyncio.subprocess.Process, http: httpx.AsyncClient, org: Tenant, name: str
) -> None:
    steps: dict[str, dict[str, Any]] = {}
    device_id = ""
    assert process.stdout is not None
    while "updated" not in steps:
        line = await asyncio.wait_for(process.stdout.readline(), 40)
        if not line:
            assert process.stderr is not None
            raise AssertionError((await process.stderr.read()).decode()[-3000:])
        step = json.loads(line)
        steps[step["step"]] = step
        if step["step"] == "provisioned":
            assert step["ok"]
            listed = await http.get("/api/v1/devices", headers=org.headers(), params={"q": name})
            device_id = next(d["id"] for d in listed.json()["items"] if d["name"] == name)
            shared = await http.put(
                f"/api/v1/devices/{device_id}/attributes/shared",
                headers=org.headers(Role.MANAGER),
                json={"interval": 30},
            )
            assert shared.status_code == 200, shared.text
            assert process.stdin is not None  # the device asks for them only after this
            process.stdin.write(b"go\n")
            await process.stdin.drain()
        if step["step"] == "subscribed":
            await http.put(
                f"/api/v1/devices/{device_id}/attributes/shared",
                headers=org.headers(Role.MANAGER),
                json={"interval": 90},
            )
    assert steps["connected"]["ok"]
    assert steps["telemetry"]["rc"] == 0
    assert steps["attributes"]["rc"] == 0
    assert steps["requested"]["response"] == {
        "client": {"sdk_fw": "1.0.3"},
        "shared": {"interval": 30},
    }
    assert steps["updated"]["update"] == {"interval": 90}
    latest = await http.get(f"/api/v1/devices/{device_id}/telemetry/latest", headers=org.headers())
    assert "sdk_temp" in latest.text
