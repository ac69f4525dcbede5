"""A simulated machine: temperature, humidity, current and vibration with noise, drift and
faults that can be injected (from the config or with the `inject_fault` command)."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Mapping
from typing import Any

from fleetcore_agent.sensors.base import SensorError, Value, option, register

CHANNELS = {  # key: (baseline, noise sigma, unit drift per hour)
    "temperature": (21.0, 0.2, 0.05),
    "humidity": (45.0, 0.8, -0.1),
    "current": (4.0, 0.05, 0.01),
    "vibration": (0.3, 0.03, 0.002),
}
FAULTS = ("none", "stuck", "spike", "dropout", "offset")


class SimulatedSensor:
    """Noise and drift around a baseline per key; a fault changes what one key reports."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        keys = options.get("keys", list(CHANNELS))
        if not isinstance(keys, list) or not keys or any(k not in CHANNELS for k in keys):
            raise SensorError(
                f"sensors.{name}.options.keys: a list of {', '.join(CHANNELS)}, got {keys!r}"
            )
        self.keys: list[str] = keys
        self.noise = option(options, "noise", 1.0, name)  # multiplier of each key's sigma
        self.drift = option(options, "drift", 1.0, name)  # multiplier of each key's drift
        seed = options.get("seed")
        self._rng = random.Random(seed if isinstance(seed, int) else None)  # noqa: S311
        self._start = time.monotonic()
        self._last: dict[str, float] = {}
        self.faults: dict[str, str] = {}
        for key, fault in dict(options.get("faults") or {}).items():
            self.inject(str(key), str(fault))

    def inject(self, key: str, fault: str) -> None:
        """Make `key` misbehave: stuck, spike, dropout, offset; `none` heals it."""
        if key not in self.keys:
            raise SensorError(f"sensors.{self.name}: no key {key!r}")
        if fault not in FAULTS:
            raise SensorError(f"sensors.{self.name}: fault is one of {', '.join(FAULTS)}")
        if fault == "none":
            self.faults.pop(key, None)
        else:
            self.faults[key] = fault

    def _value(self, key: str, hours: float) -> float | None:
        base, sigma, drift = CHANNELS[key]
        value = base + drift * self.drift * hours + self._rng.gauss(0, sigma * self.noise)
        if key == "vibration":
            value = abs(value) * (1 + 0.1 * math.sin(hours * 3600 / 7))
        fault = self.faults.get(key)
        if fault == "dropout":
            return None
        if fault == "stuck" and key in self._last:
            return self._last[key]
        if fault == "spike":
            value *= 10
        elif fault == "offset":
            value += 5 * sigma * 10
        return round(value, 4)

    def read(self) -> dict[str, Value]:
        """One sample of each key (a dropped-out key is left out)."""
        hours = (time.monotonic() - self._start) / 3600
        out: dict[str, Value] = {}
        for key in self.keys:
            value = self._value(key, hours)
            if value is not None:
                self._last[key] = value
                out[key] = value
        return out

    def close(self) -> None:
        """Nothing to release."""


@register("simulated")
def _simulated(name: str, options: Mapping[str, Any]) -> SimulatedSensor:
    return SimulatedSensor(name, options)
