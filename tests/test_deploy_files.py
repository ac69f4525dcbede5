"""deploy/: the Dockerfile, compose.yaml, Caddyfile and systemd units, checked as files.

No container runtime runs here, so the image is never built: these tests hold the files to
what the README promises (multi-stage uv build, non-root, health check, read-only root,
2 api + 2 ingest + 1 worker, the proxy's WebSocket route and forwarded headers) and check
that everything a Dockerfile copies exists. The systemd units go through
`systemd-analyze verify` when it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.env import FLEETCORE

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def copied_sources(dockerfile: Path) -> list[str]:
    """The build-context paths a Dockerfile COPYs (not those from another stage)."""
    sources = []
    for word, rest in instructions(dockerfile):
        if word == "COPY" and "--from=" not in rest:
            parts = [p for p in rest.split() if not p.startswith("--")]
            sources.extend(parts[:-1])
    return sources


def test_the_image_is_built_by_uv_in_a_builder_and_runs_as_nobody_special() -> None:
    steps = instructions(REPO / "Dockerfile")
    stages = [rest for word, rest in steps if word == "FROM"]
    assert len(stages) >= 3, stages  # uv, builder, runtime
    assert any("ghcr.io/astral-sh/uv:" in stage for stage in stages)
    runs = " ".join(rest for word, rest in steps if word == "RUN")
    assert "uv sync --frozen --no-dev" in runs
    assert "UV_PROJECT_ENVIRONMENT=/app/.venv" in " ".join(r for w, r in steps if w == "ENV")
    runtime = steps[max(i for i, (word, _) in enumerate(steps) if word == "FROM") :]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users, "the runtime stage names its user"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert [rest for word, rest in runtime if word == "COPY"] == [
        "--from=builder /app/.venv /app/.venv"
    ]  # the venv only: no sources, no uv, no compiler
    health = [rest for word, rest in runtime if word == "HEALTHCHECK"]
    assert len(health) == 1
    assert "/health" in health[0]
    assert "urllib" in health[0]
    assert "curl" not in health[0]
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "FLEETCORE_DATA_DIR=/data" in env
    assert "PYTHONDONTWRITEBYTECODE=1" in env  # nothing written beside the code (read-only)
    assert ("ENTRYPOINT", '["fleetcore", "serve"]') in runtime


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "deploy/mosquitto/Dockerfile"])
def test_everything_a_dockerfile_copies_exists(dockerfile: str) -> None:
    sources = copied_sources(REPO / dockerfile)
    assert sources
    missing = [source for source in sources if not (REPO / source).exists()]
    assert missing == []


def test_the_docker_context_lets_in_what_the_dockerfile_copies() -> None:
    allowed = [line[1:].rstrip("/") for line in (REPO / ".dockerignore").read_text().splitlines()]
    for source in copied_sources(REPO / "Dockerfile"):
        top = source.rstrip("/").split("/")[0]
        assert top in allowed, source


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def fleetcore_services(role: str) -> list[str]:
    return [
        name
        for name, service in compose()["services"].items()
        if service.get("command") == ["--role", role]
    ]


def test_compose_runs_two_api_two_ingest_and_one_worker_read_only() -> None:
    services = compose()["services"]
    assert len(fleetcore_services("api")) == 2
    assert len(fleetcore_services("ingest")) == 2
    assert len(fleetcore_services("worker")) == 1
    for name in ("postgres", "redis", "mosquitto", "proxy", "migrate"):
        assert name in services
    for role in ("api", "ingest", "worker"):
        for name in fleetcore_services(role):
            service = services[name]
            assert service["read_only"] is True
            assert "/tmp" in service["tmpfs"]
            assert service["restart"] == "unless-stopped"
            env = service["environment"]
            assert env["FLEETCORE_MQTT_DYNSEC"] == "true"
            assert env["FLEETCORE_REDIS_URL"].startswith("redis://")
            assert env["FLEETCORE_FORWARDED_ALLOW_IPS"] == "172.28.0.10"
            deps = service["depends_on"]
            assert deps["migrate"]["condition"] == "service_completed_successfully"
            for backing in ("postgres", "redis", "mosquitto"):
                assert deps[backing]["condition"] == "service_healthy"
    ingest_ids = {
        services[n]["environment"]["FLEETCORE_MQTT_INGEST_ID"] for n in fleetcore_services("ingest")
    }
    assert len(ingest_ids) == 2  # each worker resumes its own broker session
    for name in ("postgres", "redis", "mosquitto"):
        assert "test" in services[name]["healthcheck"]
    proxy = services["proxy"]
    assert proxy["networks"]["backend"]["ipv4_address"] == "172.28.0.10"
    assert {
        dep for dep, c in proxy["depends_on"].items() if c["condition"] == "service_healthy"
    } == set(fleetcore_services("api"))


def test_compose_keeps_no_secret_in_the_repository() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    for variable in (
        "FLEETCORE_SECRET_KEY",
        "POSTGRES_PASSWORD",
        "REDIS_PASSWORD",
        "MQTT_PLATFORM_PASSWORD",
        "MQTT_ADMIN_PASSWORD",
    ):
        assert f"${{{variable}:?" in text  # required from deploy/.env, no default
    assert "deploy/.env" in (REPO / ".gitignore").read_text().splitlines()
    example = (DEPLOY / "env.example").read_text()
    assert all(line.endswith("=") for line in example.splitlines() if "PASSWORD" in line)


def test_the_proxy_passes_websockets_and_client_addresses_to_both_apis() -> None:
    caddyfile = (DEPLOY / "caddy" / "Caddyfile").read_text()
    volumes = compose()["services"]["proxy"]["volumes"]
    assert "./caddy/Caddyfile:/etc/caddy/Caddyfile:ro" in volumes
    websocket = re.search(r"@websocket \{(.*?)\}", caddyfile, re.S)
    assert websocket is not None
    matcher = websocket.group(1)
    assert "path /api/v1/ws" in matcher
    assert "header Connection *Upgrade*" in matcher
    assert "header Upgrade websocket" in matcher
    upstreams = " ".join(f"{name}:8000" for name in fleetcore_services("api"))
    routes = re.findall(r"reverse_proxy (.*?) \{(.*?)\n\t\t\}", caddyfile, re.S)
    assert len(routes) == 2
    for targets, body in routes:
        assert targets == upstreams
        assert "header_up X-Forwarded-For {remote_host}" in body
        assert "header_up X-Forwarded-Proto {scheme}" in body
    assert "handle @websocket" in caddyfile
    assert "respond /metrics 404" in caddyfile


UNITS = ["fleetcore-api@.service", "fleetcore-ingest@.service", "fleetcore-worker.service"]


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_units_are_hardened(unit: str) -> None:
    text = (DEPLOY / "systemd" / unit).read_text()
    for line in (
        "EnvironmentFile=/etc/fleetcore/fleetcore.env",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/var/lib/fleetcore",
        "CapabilityBoundingSet=",
        "Restart=always",
        "User=fleetcore",
        "Requires=fleetcore-migrate.service",
    ):
        assert line in text.splitlines(), line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verifies_the_units(tmp_path: Path) -> None:
    # ExecStart must name an executable file: this checkout's fleetcore stands in for /opt.
    for unit in (DEPLOY / "systemd").iterdir():
        if unit.suffix in (".service", ".target"):
            text = unit.read_text().replace("/opt/fleetcore/.venv/bin/fleetcore", FLEETCORE)
            (tmp_path / unit.name).write_text(text)
    names = [
        "fleetcore-api@01.service",
        "fleetcore-ingest@01.service",
        "fleetcore-worker.service",
        "fleetcore-migrate.service",
        "fleetcore.target",
    ]
    checked = subprocess.run(
        ["systemd-analyze", "verify", *names],
        cwd=tmp_path,
        env={"SYSTEMD_UNIT_PATH": f"{tmp_path}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    assert checked.stderr.strip() == ""
