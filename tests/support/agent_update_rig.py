"""Rig for the agent's self-update tests: real wheels (built offline), a wheelhouse, the
platform's OTA API, a gate that can hold a download half-way, and a stand-in for systemd
that runs the shipped unit's lines."""

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
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from tests.support.agent_rig import clean_env
from tests.support.http_clients import local_client
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
class DownloadGate:
    """A pass-through in front of the platform's download route that can hold the download
    half-way: from chunk `hold_from` on it answers 503 until opened, and it records which
    chunks were asked for. The bytes always come from the real platform; only the test of
    a download interrupted mid-way needs it (the platform cannot be told to stop answering
    at chunk N while it stays up for MQTT)."""

    upstream: str
    requested: list[int] = field(default_factory=list)
    hold_from: int | None = None
    port: int = field(default_factory=free_port)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @contextmanager
    def serving(self) -> Iterator[DownloadGate]:
        rig = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                chunk = int(query.get("chunk", "0"))
                rig.requested.append(chunk)
                if rig.hold_from is not None and chunk >= rig.hold_from:
                    return self._answer(503, b"")
                request = urllib.request.Request(  # noqa: S310 - a local test URL
                    rig.upstream + self.path,
                    headers={"X-Device-Token": self.headers.get("X-Device-Token", "")},
                )
                try:
                    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                        return self._answer(response.status, response.read())
                except urllib.error.HTTPError as exc:
                    return self._answer(exc.code, exc.read())

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


def signing_key() -> tuple[Ed25519PrivateKey, bytes]:
    """A new Ed25519 key and its public half as PEM."""
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    return private, public


class OtaApi:
    """The platform's OTA API as an operator uses it: keys, packages, rollouts."""

    def __init__(self, base: str, headers: dict[str, str]) -> None:
        self.base = base
        self.headers = headers

    async def add_key(self, public_pem: bytes) -> None:
        async with local_client(base_url=self.base, headers=self.headers) as http:
            body = {"name": "release", "public_key": public_pem.decode()}
            added = await http.post("/api/v1/ota/keys", json=body)
            assert added.status_code == 201, added.text

    async def upload(
        self, title: str, version: str, data: bytes, signer: Ed25519PrivateKey | None = None
    ) -> dict[str, Any]:
        fields = {"title": title, "version": version, "kind": "software"}
        if signer is not None:
            fields["signature"] = base64.b64encode(signer.sign(data)).decode()
        async with local_client(base_url=self.base, headers=self.headers) as http:
            made = await http.post(
                "/api/v1/ota/packages",
                data=fields,
                files={"file": (f"{title}-{version}.whl", data, "application/octet-stream")},
            )
            assert made.status_code == 201, made.text
            package: dict[str, Any] = made.json()
            return package

    async def roll_out(self, package: dict[str, Any], device_id: str, **body: Any) -> str:
        """A rollout of `package` to the device; its id."""
        async with local_client(base_url=self.base, headers=self.headers) as http:
            made = await http.post(
                "/api/v1/ota/rollouts",
                json={"package_id": package["id"], "target": {"device_ids": [device_id]}, **body},
            )
            assert made.status_code == 201, made.text
            return str(made.json()["id"])

    async def rollout(self, rollout_id: str) -> dict[str, Any]:
        async with local_client(base_url=self.base, headers=self.headers) as http:
            got = await http.get(f"/api/v1/ota/rollouts/{rollout_id}")
            assert got.status_code == 200, got.text
            body: dict[str, Any] = got.json()
            devices = await http.get(f"/api/v1/ota/rollouts/{rollout_id}/devices")
            assert devices.status_code == 200, devices.text
            body["device_rows"] = devices.json()["items"]
            return body

    async def abort(self, rollout_id: str) -> None:
        async with local_client(base_url=self.base, headers=self.headers) as http:
            done = await http.post(f"/api/v1/ota/rollouts/{rollout_id}/abort")
            assert done.status_code == 200, done.text


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
