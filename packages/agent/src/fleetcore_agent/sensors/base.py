"""The sensor plug-in interface and the registry that loads plug-ins by name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

Value = float | int | str | bool


class SensorError(RuntimeError):
    """A sensor could not be set up or read; the message says which and why."""


class Sensor(Protocol):
    """A source of readings. `read` returns key → value; missing keys mean no reading."""

    name: str

    def read(self) -> dict[str, Value]:
        """One sample of every value this sensor has."""
        ...

    def close(self) -> None:
        """Release hardware."""
        ...


Factory = Callable[[str, Mapping[str, Any]], Sensor]
_REGISTRY: dict[str, Factory] = {}


def register(kind: str) -> Callable[[Factory], Factory]:
    """Make a plug-in loadable as `type: <kind>` in the config."""

    def decorate(factory: Factory) -> Factory:
        _REGISTRY[kind] = factory
        return factory

    return decorate


def kinds() -> list[str]:
    """The registered plug-in names."""
    return sorted(_REGISTRY)


def create(kind: str, name: str, options: Mapping[str, Any]) -> Sensor:
    """A sensor of a registered kind; SensorError names an unknown kind or a bad option."""
    factory = _REGISTRY.get(kind)
    if factory is None:
        raise SensorError(f"sensors: unknown type {kind!r} (known: {', '.join(kinds())})")
    return factory(name, options)


def option(options: Mapping[str, Any], key: str, default: float, sensor: str) -> float:
    """A numeric option, or SensorError naming it."""
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise SensorError(f"sensors.{sensor}.options.{key}: expected a number, got {raw!r}")
    return float(raw)
