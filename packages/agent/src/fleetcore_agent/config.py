"""Agent settings: a YAML file, then FLEETCORE_AGENT_* environment variables on top.

Every problem is reported as a `ConfigError` whose message starts with the setting's name,
so a typo in the file or the environment points at itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

ENV_OVERRIDES = {
    "FLEETCORE_AGENT_TOKEN": "token",
    "FLEETCORE_AGENT_DEVICE_ID": "device_id",
    "FLEETCORE_AGENT_MQTT_URL": "mqtt_url",
    "FLEETCORE_AGENT_HTTP_URL": "http_url",
    "FLEETCORE_AGENT_DATA_DIR": "data_dir",
}
FSYNC_POLICIES = ("full", "normal", "off")


class ConfigError(ValueError):
    """A setting is missing or wrong; the message names it."""


@dataclass(frozen=True, slots=True)
class SensorConfig:
    """One sensor plug-in: its registered type, a name for its keys, and its options."""

    type: str
    name: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """Everything the agent runs with, validated."""

    device_id: str
    token: str
    mqtt_url: str = "mqtt://127.0.0.1:1883"
    http_url: str = ""  # empty: no HTTP fallback, commands only over MQTT
    data_dir: Path = Path("./agent-data")
    interval_s: float = 5.0
    sensors: tuple[SensorConfig, ...] = (SensorConfig("simulated", "env"),)
    sequence: bool = False  # add a per-device counter key "seq" to every reading
    fsync: str = "full"
    disk_budget_mb: float = 64.0
    batch_size: int = 100
    fresh_share: float = 0.25  # part of each batch kept for the newest readings
    max_readings_per_s: float = 500.0  # pacing of the backlog drain
    ack_timeout_s: float = 10.0
    keepalive_s: int = 30
    session_expiry_s: int = 3600
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    http_fallback_after_s: float = 30.0
    breaker_failures: int = 3
    breaker_reset_s: float = 30.0
    health_interval_s: float = 30.0
    reboot_command: str = ""  # empty: reboot is simulated (logged and answered)

    @property
    def mqtt_host(self) -> str:
        """Host of mqtt_url."""
        return urlsplit(self.mqtt_url).hostname or "127.0.0.1"

    @property
    def mqtt_port(self) -> int:
        """Port of mqtt_url (1883, 8883 for mqtts)."""
        parts = urlsplit(self.mqtt_url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def mqtt_tls(self) -> bool:
        """Whether mqtt_url asks for TLS."""
        return urlsplit(self.mqtt_url).scheme == "mqtts"


_NUMBERS: dict[str, tuple[type, float, float]] = {
    "interval_s": (float, 0.001, 86_400),
    "disk_budget_mb": (float, 0.01, 1_000_000),
    "batch_size": (int, 1, 10_000),
    "fresh_share": (float, 0.0, 0.9),
    "max_readings_per_s": (float, 0.1, 1_000_000),
    "ack_timeout_s": (float, 0.1, 600),
    "keepalive_s": (int, 5, 3600),
    "session_expiry_s": (int, 0, 4_294_967_295),
    "backoff_min_s": (float, 0.01, 3600),
    "backoff_max_s": (float, 0.01, 86_400),
    "http_fallback_after_s": (float, 0.0, 86_400),
    "breaker_failures": (int, 1, 1000),
    "breaker_reset_s": (float, 0.01, 86_400),
    "health_interval_s": (float, 0.1, 86_400),
}
_TEXTS = ("device_id", "token", "mqtt_url", "http_url", "fsync", "reboot_command")
_KNOWN = {f for f in AgentConfig.__dataclass_fields__}


def _number(name: str, raw: Any) -> float | int:
    kind, low, high = _NUMBERS[name]
    if isinstance(raw, bool) or not isinstance(raw, int | float | str):
        raise ConfigError(f"{name}: expected a number, got {raw!r}")
    try:
        value = kind(raw) if kind is float else int(str(raw))
    except ValueError:
        raise ConfigError(
            f"{name}: expected {'an integer' if kind is int else 'a number'}, got {raw!r}"
        ) from None
    if not low <= value <= high:
        raise ConfigError(f"{name}: {value} is outside {low:g}..{high:g}")
    return value


def _sensors(raw: Any) -> tuple[SensorConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("sensors: expected a non-empty list of {type, name, options}")
    out: list[SensorConfig] = []
    for index, item in enumerate(raw):
        where = f"sensors[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected a mapping with type, name and options")
        unknown = set(item) - {"type", "name", "options"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown setting")
        kind = item.get("type")
        if not isinstance(kind, str) or not kind:
            raise ConfigError(f"{where}.type: expected a plug-in name such as 'simulated'")
        name = item.get("name", kind)
        if not isinstance(name, str) or not name.replace("_", "").isalnum():
            raise ConfigError(f"{where}.name: letters, digits and _ only, got {name!r}")
        options = item.get("options") or {}
        if not isinstance(options, dict):
            raise ConfigError(f"{where}.options: expected a mapping")
        out.append(SensorConfig(kind, name, options))
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise ConfigError("sensors: two sensors have the same name")
    return tuple(out)


def from_mapping(values: Mapping[str, Any]) -> AgentConfig:
    """Validate a mapping of settings (file and environment already merged)."""
    unknown = sorted(set(values) - _KNOWN)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown setting")
    settings: dict[str, Any] = {}
    for name, raw in values.items():
        if name in _NUMBERS:
            settings[name] = _number(name, raw)
        elif name in _TEXTS:
            if not isinstance(raw, str):
                raise ConfigError(f"{name}: expected text, got {raw!r}")
            settings[name] = raw.strip()
        elif name == "data_dir":
            if not isinstance(raw, str | Path) or not str(raw):
                raise ConfigError("data_dir: expected a directory path")
            settings[name] = Path(raw)
        elif name == "sequence":
            if not isinstance(raw, bool):
                raise ConfigError(f"sequence: expected true or false, got {raw!r}")
            settings[name] = raw
        elif name == "sensors":
            settings[name] = _sensors(raw)
    for required in ("device_id", "token"):
        if not settings.get(required):
            env = next(k for k, v in ENV_OVERRIDES.items() if v == required)
            raise ConfigError(f"{required}: required (in the file or {env})")
    config = AgentConfig(**settings)
    _check(config)
    return config


def _check(config: AgentConfig) -> None:
    if any(ch in config.device_id for ch in "+#/") or len(config.device_id) > 64:
        raise ConfigError("device_id: at most 64 characters, without + # or /")
    mqtt = urlsplit(config.mqtt_url)
    if mqtt.scheme not in ("mqtt", "mqtts") or not mqtt.hostname:
        raise ConfigError(f"mqtt_url: expected mqtt://host:port, got {config.mqtt_url!r}")
    try:
        _ = mqtt.port
    except ValueError:
        raise ConfigError(f"mqtt_url: bad port in {config.mqtt_url!r}") from None
    if config.http_url:
        http = urlsplit(config.http_url)
        if http.scheme not in ("http", "https") or not http.hostname:
            raise ConfigError(f"http_url: expected http(s)://host:port, got {config.http_url!r}")
    if config.fsync not in FSYNC_POLICIES:
        raise ConfigError(f"fsync: one of {', '.join(FSYNC_POLICIES)}, got {config.fsync!r}")
    if config.backoff_max_s < config.backoff_min_s:
        raise ConfigError("backoff_max_s: must not be below backoff_min_s")


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> AgentConfig:
    """Read the YAML file (if any), apply the environment overrides, validate."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    if path is not None:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {path} is not valid YAML: {exc}") from None
        if document is not None and not isinstance(document, dict):
            raise ConfigError(f"config: {path} must hold a mapping of settings")
        values.update(document or {})
    for env, name in ENV_OVERRIDES.items():
        if environ.get(env):
            values[name] = environ[env]
    return from_mapping(values)


def with_changes(config: AgentConfig, **changes: Any) -> AgentConfig:
    """A copy with some settings changed, validated like the file."""
    merged = {name: getattr(config, name) for name in _KNOWN}
    merged["sensors"] = [
        {"type": s.type, "name": s.name, "options": dict(s.options)} for s in config.sensors
    ]
    merged.update(changes)
    return from_mapping(merged)
