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
    project.write_text(
        re.sub(r'^version = ".*"', f'version = "{version}"', project.read_text(), flags=re.M)
    )
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
    files.setdefault(
        f"{info}/WHEEL", f"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: {tag}\n".encode()
    )
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


# The agent's third-party requirements and theirs (cryptography needs cffi, which needs pycparser).
_THIRD_PARTY = ("paho_mqtt", "pyyaml", "psutil", "cryptography", "cffi", "pycparser")


def wheelhouse(out: Path) -> list[Path]:
    """The agent's dependencies as wheels: the protocol (built) and the third-party ones."""
    out.mkdir(parents=True, exist_ok=True)
    wheels = [build_wheel(ROOT / "packages" / "protocol", out, "fleetcore_protocol")]
    wheels += [wheel_of_installed(name, out) for name in _THIRD_PARTY]
    return wheels


@dataclass
class OtaServer:
    """The platform's download route (the OTA contract) on a local port: chunks of
    `size` bytes by index, 404 for a package not assigned, and a gate that answers 503
    from chunk `hold_from` on until opened."""

    token: str
    packages: dict[tuple[str, str], bytes] = field(default_factory=dict)
    requested: list[int] = field(default_factory=list)
    hold_from: int | None = None
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def serving(self) -> Iterator[OtaServer]:
        rig = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                if self.headers.get("X-Device-Token") != rig.token:
                    return self._answer(401, b"")
                if url.path != "/api/v1/devices/me/ota/software":
                    return self._answer(404, b"")
                body = rig.packages.get((query.get("title", ""), query.get("version", "")))
                if body is None:
                    return self._answer(404, b"")
                chunk, size = int(query["chunk"]), int(query["size"])
                rig.requested.append(chunk)
                if rig.hold_from is not None and chunk >= rig.hold_from:
                    return self._answer(503, b"")
                return self._answer(200, body[chunk * size : (chunk + 1) * size])

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()


def attributes_for(title: str, version: str, body: bytes, **extra: Any) -> dict[str, Any]:
    """The sw_* shared attributes of an assignment."""
    return {
        "sw_title": title,
        "sw_version": version,
        "sw_size": len(body),
        "sw_checksum": hashlib.sha256(body).hexdigest(),
        "sw_checksum_algorithm": "SHA256",
        **extra,
    }


class Service:
    """What systemd does with deploy/agent/fleetcore-agent.service: ExecStartPre, then
    ExecStart, started again whenever it exits (Restart=always), until stopped."""

    def __init__(self, root: Path, config: Path, log: Path) -> None:
        unit = UNIT.read_text()
        lines = {}
        for key in ("ExecStartPre", "ExecStart"):
            match = re.search(rf"^{key}=(.+)$", unit, re.M)
            assert match is not None, key
            line = match.group(1).replace("/opt/fleetcore-agent", str(root))
            line = line.replace("/etc/fleetcore-agent/agent.yaml", str(config))
            lines[key] = shlex.split(line)
        self.pre, self.command = lines["ExecStartPre"], lines["ExecStart"]
        self.log = log
        self.env = clean_env(INVOCATION_ID="test")  # as systemd sets it
        self.exits: list[int] = []
        self.process: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            with self.log.open("ab") as log:
                pre = subprocess.run(self.pre, stdout=log, stderr=log, env=self.env, check=False)
                if pre.returncode != 0:
                    self.exits.append(-1000 - pre.returncode)
                    self._stop.wait(0.2)
                    continue
                with self._lock:
                    if self._stop.is_set():
                        return
                    self.process = subprocess.Popen(
                        self.command, stdout=log, stderr=log, env=self.env
                    )
                self.exits.append(self.process.wait())
            self._stop.wait(0.1)  # RestartSec, shortened

    def kill(self) -> None:
        """SIGKILL the running agent (systemd starts it again)."""
        with self._lock:
            if self.process is not None and self.process.poll() is None:
                self.process.kill()

    def stop(self) -> None:
        """systemctl stop: no more restarts, SIGTERM the agent."""
        self._stop.set()
        with self._lock:
            process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        self._thread.join(timeout=30)


def install_first(tmp: Path, wheels: list[Path]) -> tuple[Path, Path]:
    """deploy/agent/install.sh without the system parts: (root, state dir)."""
    root, state = tmp / "opt", tmp / "var"
    done = subprocess.run(
        [
            str(INSTALL_SH),
            "--no-system",
            "--offline",
            "--installer",
            uv(),
            "--root",
            str(root),
            "--config-dir",
            str(tmp / "etc"),
            "--state-dir",
            str(state),
            *map(str, wheels),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHON": sys.executable},
        check=False,
    )
    assert done.returncode == 0, done.stderr + done.stdout
    return root, state
