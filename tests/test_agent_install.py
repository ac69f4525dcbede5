"""The agent installs alone: a fresh virtualenv, the protocol and agent packages only."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _uv() -> str:
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make install`"
    return found


def test_agent_installs_without_the_server(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    packages = [str(ROOT / "packages" / "protocol"), str(ROOT / "packages" / "agent")]
    install = [_uv(), "pip", "install", "--python", str(python), *packages]
    # Offline first (the wheels are in uv's cache after `make install`), then the index.
    done = subprocess.run([*install, "--offline"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        done = subprocess.run(install, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr

    version = subprocess.run(
        [str(venv / "bin" / "fleetcore-agent"), "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("fleetcore-agent ")

    probe = (
        "import importlib.util as u, fleetcore_agent.agent\n"
        "print(sorted(m for m in ('fastapi', 'sqlalchemy', 'fleetcore', 'amqtt', 'uvicorn')"
        " if u.find_spec(m)))"
    )
    imported = subprocess.run(
        [str(python), "-c", probe], capture_output=True, text=True, check=False
    )
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip() == "[]"

    bad = subprocess.run(
        [str(venv / "bin" / "fleetcore-agent"), "check"],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("fleetcore-agent: device_id: required")
