"""Rig for the agent's self-update tests: real wheels (built offline), a wheelhouse, the
platform's download route, and a stand-in for systemd that runs the shipped unit's lines."""

from __future__ import annotations

import base64
import hashlib
import http.server
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.agent_rig import clean_env
from tests.support.postgres import free_port

ROOT = Path(__file__).resolve().parents[2]
SITE = Path(sys.executable).parent.parent / "lib" / "python3.11" / "site-packages"
UNIT = ROOT / "deploy" / "agent" / "fleetcore-agent.service"
INSTALL_SH = ROOT / "deploy" / "agent" / "install.sh"
RESTART_EXIT_CODE = 75


def uv() -> str:
    """The uv binary `make install` uses."""
    found = shutil.which("uv") or str(ROOT / ".tools" / "bin" / "uv")
    assert Path(found).exists(), "uv is installed by `make install`"
    return found


def build_wheel(source: Path, out: Path, name: str) -> Path:
    """`uv build --wheel` offline (hatchling is in uv's cache after `make install`)."""
    done = subprocess.run(
        [uv(), "build", "--wheel", "--offline", "--quiet", "-o", str(out), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    version = re.search(r'^version = "([^"]+)"', (source / "pyproject.toml").read_text(), re.M)
    assert version is not None
    return next(out.glob(f"{name}-{version.group(1)}-*.whl"))


def agent_wheel(tmp: Path, version: str) -> Path:
    """A real wheel of this agent's source, numbered `version`."""
    source = tmp / f"agent-src-{version}"
    shutil.copytree(
        ROOT / "packages" / "agent", source, ignore=shutil.ignore_patterns("__pycache__")
    )
    project = source / "pyproject.toml"
    project.write_text(re.sub(r'^version = ".*"', f'version = "{version}"', project.read_text(), flags=re.M))
    init = source / "src" / "fleetcore_agent" / "__init__.py"
    init.write_text(re.sub(r'__version__ = ".*"', f'__version__ = "{version}"', init.read_text()))
    out = tmp / "dist"
    out.mkdir(exist_ok=True)
    return build_wheel(source, out, "fleetcore_agent")


def _zip_wheel(out: Path, name: str, files: dict[str, bytes], tag: str = "py3-none-any") -> Path:
    """A wheel from its files, with the RECORD pip checks."""
    distribution, version = name.split("-", 1)
    info = f"{distribution}-{version}.dist-info"
    files = {**files}
    files.setdefault(f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode())
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = ("\n".join(record) + "\n").encode()
    target = out / f"{distribution}-{version}-{tag}.whl"
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    return target


def crashing_agent_wheel(out: Path, version: str) -> Path:
    """A fleetcore-agent that installs and answers --version, then crashes on `run`."""
    info = f"fleetcore_agent-{version}.dist-info"
    cli = (
        "import sys\n"
        "def main():\n"
        f"    if '--version' in sys.argv:\n        print('fleetcore-agent {version}')\n"
        "        return 0\n"
        "    raise RuntimeError('this version is broken')\n"
    )
    out.mkdir(parents=True, exist_ok=True)
    return _zip_wheel(
        out,
        f"fleetcore_agent-{version}",
        {
            "fleetcore_agent/__init__.py": f'__version__ = "{version}"\n'.encode(),
            "fleetcore_agent/cli.py": cli.encode(),
            f"{info}/METADATA": (
                f"Metadata-Version: 2.1\nName: fleetcore-agent\nVersion: {version}\n"
            ).encode(),
            f"{info}/entry_points.txt": (
                b"[console_scripts]\nfleetcore-agent = fleetcore_agent.cli:main\n"
            ),
        },
    )


def wheel_of_installed(distribution: str, out: Path) -> Path:
    """Re-pack an installed distribution of the test environment as a wheel (offline)."""
    info = next(SITE.glob(f"{distribution}-*.dist-info"))
    tags = [
        line.split(":", 1)[1].strip()
        for line in (info / "WHEEL").read_text().splitlines()
        if line.startswith("Tag:")
    ]
    files: dict[str, bytes] = {}
    for line in (info / "RECORD").read_text().splitlines():
        path = line.split(",")[0]
        if not path or path.endswith(".pyc") or path.startswith("..") or path.endswith("/RECORD"):
            continue
        if (SITE / path).is_file():
            files[path] = (SITE / path).read_bytes()
    return _zip_wheel(out, info.name.removesuffix(".dist-info"), files, tag=tags[0])


def wheelhouse(out: Path) -> list[Path]:
    """The agent's dependencies as wheels: the protocol (built) and the third-party ones."""
    out.mkdir(parents=True, exist_ok=True)
    wheels = [build_wheel(ROOT / "packages" / "protocol", out, "fleetcore_protocol")]
    wheels += [wheel_of_installed(name, out) for name in ("paho_mqtt", "pyyaml", "psutil")]
    return wheels
