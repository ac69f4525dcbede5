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
class PartConfig:
    """A camera part (source, trigger or detector): its type and its options."""

    type: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CameraConfig:
    """The camera plug-in (`camera:` section); options of the parts are checked at start."""

    name: str = "camera"  # the `camera` field of every read
    source: PartConfig = PartConfig("simulated")
    trigger: PartConfig = PartConfig("interval")
    detector: PartConfig = PartConfig("simulated")
    interval_s: float = 5.0  # between looks: captures (interval) or checks (motion, pir)
    min_gap_s: float = 1.0  # rate limit: at most one capture per this long
    max_reads_per_frame: int = 4
    min_confidence: float = 0.0  # reads below are not sent
    spool_dir: Path | None = None  # None: data_dir/camera
    spool_budget_bytes: int = 256_000_000
    upload_batch: int = 10  # reads taken from the queue at a time (one request each)
    thermal_path: str = "/sys/class/thermal/thermal_zone0/temp"
    hot_c: float = 80.0
    cool_c: float = 70.0
    hot_action: str = "slow"  # slow: intervals times slow_factor; pause: no capture
    slow_factor: float = 4.0
    thermal_check_s: float = 5.0


INSTALLERS = ("pip", "uv")
RESTART_MODES = ("auto", "exit", "exec")


@dataclass(frozen=True, slots=True)
class UpdateConfig:
    """Self-update (`update:` section): where the versions live and how a trial runs."""

    root: Path  # <root>/versions/<version>, <root>/current, <root>/previous
    title: str = "fleetcore-agent"  # the sw_title this agent updates itself from
    url: str = ""  # where packages download from; empty: http_url
    public_key: str = ""  # Ed25519 public key (PEM text, a file path, or base64): must sign
    health_deadline_s: float = 120.0  # a new version must connect and report within this
    max_trial_starts: int = 3  # starts of a new version before the guard rolls back
    chunk_size: int = 65_536
    installer: str = "pip"  # pip, uv, or the path of a uv binary
    offline: bool = False  # no package index: only the package's wheels and earlier ones
    restart: str = "auto"  # exit (systemd restarts it), exec (re-exec), auto: exit under systemd
    retry_s: float = 10.0  # between download attempts while the platform is unreachable


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
    camera: CameraConfig | None = None  # None: no camera plug-in
    update: UpdateConfig | None = None  # None: no self-update (versions still reported)

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
        elif name == "camera":
            settings[name] = raw if isinstance(raw, CameraConfig | None) else _camera(raw)
        elif name == "update":
            settings[name] = raw if isinstance(raw, UpdateConfig | None) else _update(raw)
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
    _check_update(config)
    camera = config.camera
    if camera is not None:
        if not config.http_url:
            raise ConfigError("camera: needs http_url (reads and images are sent over HTTP)")
        if camera.trigger.type == "pir":
            wanted = camera.trigger.options.get("sensor")
            # Any sensor with a boolean `motion` key will do; the agent's pir plug-in has one.
            if wanted not in {s.name for s in config.sensors}:
                raise ConfigError(
                    f"camera.trigger.options.sensor: the name of a sensor in sensors (a pir), "
                    f"got {wanted!r}"
                )


_CAMERA_NUMBERS: dict[str, tuple[type, float, float]] = {
    "interval_s": (float, 0.01, 86_400),
    "min_gap_s": (float, 0.0, 86_400),
    "max_reads_per_frame": (int, 1, 100),
    "min_confidence": (float, 0.0, 1.0),
    "spool_budget_bytes": (int, 0, 10**13),
    "upload_batch": (int, 1, 1000),
}
_THERMAL_NUMBERS: dict[str, tuple[type, float, float]] = {
    "hot_c": (float, -40, 200),
    "cool_c": (float, -40, 200),
    "slow_factor": (float, 1, 1000),
    "check_s": (float, 0.01, 3600),
}
_PARTS = {
    "source": ("simulated", "picamera2", "opencv"),
    "trigger": ("interval", "motion", "pir"),
    "detector": ("simulated",),  # or module:attribute
}
_HOT_ACTIONS = ("slow", "pause")


def _in_range(where: str, raw: Any, kind: type, low: float, high: float) -> float | int:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ConfigError(f"{where}: expected a number, got {raw!r}")
    if kind is int and not isinstance(raw, int):
        raise ConfigError(f"{where}: expected an integer, got {raw!r}")
    value = kind(raw)
    if not low <= value <= high:
        raise ConfigError(f"{where}: {value} is outside {low:g}..{high:g}")
    return value  # type: ignore[no-any-return]


def _part(name: str, raw: Any) -> PartConfig:
    where = f"camera.{name}"
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a type name or {{type, options}}")
    unknown = set(raw) - {"type", "options"}
    if unknown:
        raise ConfigError(f"{where}.{sorted(unknown)[0]}: unknown setting")
    kind = raw.get("type")
    known = _PARTS[name]
    dotted = name == "detector" and isinstance(kind, str) and _is_dotted(kind)
    if kind not in known and not dotted:
        extra = " or module:attribute (your model)" if name == "detector" else ""
        raise ConfigError(f"{where}.type: one of {', '.join(known)}{extra}, got {kind!r}")
    options = raw.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{where}.options: expected a mapping")
    return PartConfig(str(kind), options)


def _is_dotted(text: str) -> bool:
    module, colon, attribute = text.partition(":")
    names = [*module.split("."), *attribute.split(".")]
    return bool(colon) and all(n.isidentifier() for n in names)


def _camera(raw: Any) -> CameraConfig:
    if not isinstance(raw, dict):
        raise ConfigError("camera: expected a mapping of camera settings")
    fields = set(CameraConfig.__dataclass_fields__)
    thermal_fields = {"thermal_path", "hot_c", "cool_c", "hot_action", "slow_factor"}
    allowed = (fields - thermal_fields - {"thermal_check_s"}) | {"thermal"}
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"camera.{unknown[0]}: unknown setting")
    values: dict[str, Any] = {}
    for key, item in raw.items():
        where = f"camera.{key}"
        if key in _CAMERA_NUMBERS:
            values[key] = _in_range(where, item, *_CAMERA_NUMBERS[key])
        elif key in _PARTS:
            values[key] = _part(key, item)
        elif key == "name":
            if not isinstance(item, str) or not item.strip() or len(item) > 64:
                raise ConfigError(f"{where}: text of 1..64 characters, got {item!r}")
            values[key] = item.strip()
        elif key == "spool_dir":
            if not isinstance(item, str | Path) or not str(item):
                raise ConfigError(f"{where}: expected a directory path")
            values[key] = Path(item)
        elif key == "thermal":
            values.update(_thermal(item))
    camera = CameraConfig(**values)
    if camera.cool_c >= camera.hot_c:
        raise ConfigError("camera.thermal.cool_c: must be below hot_c")
    return camera


def _thermal(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("camera.thermal: expected a mapping (path, hot_c, cool_c, action)")
    out: dict[str, Any] = {}
    for key, item in raw.items():
        where = f"camera.thermal.{key}"
        if key in _THERMAL_NUMBERS:
            field_name = "thermal_check_s" if key == "check_s" else key
            out[field_name] = _in_range(where, item, *_THERMAL_NUMBERS[key])
        elif key == "path":
            if not isinstance(item, str) or not item:
                raise ConfigError(f"{where}: expected a file path")
            out["thermal_path"] = item
        elif key == "action":
            if item not in _HOT_ACTIONS:
                raise ConfigError(f"{where}: slow or pause, got {item!r}")
            out["hot_action"] = item
        else:
            raise ConfigError(f"{where}: unknown setting")
    return out


_UPDATE_NUMBERS: dict[str, tuple[type, float, float]] = {
    "health_deadline_s": (float, 1, 86_400),
    "max_trial_starts": (int, 1, 100),
    "chunk_size": (int, 1024, 64 * 1024 * 1024),
    "retry_s": (float, 0.01, 86_400),
}


def _update(raw: Any) -> UpdateConfig:
    if not isinstance(raw, dict):
        raise ConfigError("update: expected a mapping of self-update settings")
    unknown = sorted(set(raw) - set(UpdateConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"update.{unknown[0]}: unknown setting")
    values: dict[str, Any] = {}
    for key, item in raw.items():
        where = f"update.{key}"
        if key in _UPDATE_NUMBERS:
            values[key] = _in_range(where, item, *_UPDATE_NUMBERS[key])
        elif key == "root":
            if not isinstance(item, str | Path) or not str(item):
                raise ConfigError(f"{where}: expected a directory path")
            values[key] = Path(item)
        elif key == "offline":
            if not isinstance(item, bool):
                raise ConfigError(f"{where}: expected true or false, got {item!r}")
            values[key] = item
        elif not isinstance(item, str):
            raise ConfigError(f"{where}: expected text, got {item!r}")
        else:
            values[key] = item.strip()
    if "root" not in values:
        raise ConfigError("update.root: required (the directory holding versions/ and current)")
    update = UpdateConfig(**values)
    if update.restart not in RESTART_MODES:
        raise ConfigError(f"update.restart: one of {', '.join(RESTART_MODES)}")
    if update.installer not in INSTALLERS and not update.installer.startswith("/"):
        raise ConfigError("update.installer: pip, uv, or the absolute path of a uv binary")
    if update.public_key:
        from fleetcore_agent.update.verify import public_key_bytes

        try:
            public_key_bytes(public_key_text(update.public_key))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"update.public_key: {exc}") from None
    return update


def public_key_text(setting: str) -> str:
    """The key itself: the setting, or the file it names."""
    if not setting.startswith("-----") and Path(setting).is_file():
        return Path(setting).read_text(encoding="utf-8")
    return setting


def _check_update(config: AgentConfig) -> None:
    update = config.update
    if update is None:
        return
    url = update.url or config.http_url
    if not url:
        raise ConfigError("update: needs update.url or http_url (packages download over HTTP)")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"update.url: expected http(s)://host:port, got {url!r}")
    # The queue must survive a switch of version: never inside a version's directory.
    data = config.data_dir.resolve()
    versions = (update.root / "versions").resolve()
    if data == versions or versions in data.parents:
        raise ConfigError("data_dir: must be outside update.root/versions (the queue is kept)")


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
