"""System health of the device itself: CPU, memory, disk and CPU temperature (psutil)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import psutil

from fleetcore_agent.sensors.base import Value, register


class SystemSensor:
    """cpu_percent, memory_percent, disk_percent (of `path`) and cpu_temp when known."""

    def __init__(self, name: str, options: Mapping[str, Any]) -> None:
        self.name = name
        self.path = str(options.get("path", "/"))
        psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read(self) -> dict[str, Value]:
        """One sample."""
        out: dict[str, Value] = {
            "cpu_percent": float(psutil.cpu_percent(interval=None)),
            "memory_percent": float(psutil.virtual_memory().percent),
            "disk_percent": float(psutil.disk_usage(self.path).percent),
        }
        temps = getattr(psutil, "sensors_temperatures", None)
        if temps is not None:
            for readings in (temps() or {}).values():
                if readings:
                    out["cpu_temp"] = float(readings[0].current)
                    break
        return out

    def close(self) -> None:
        """Nothing to release."""


@register("system")
def _system(name: str, options: Mapping[str, Any]) -> SystemSensor:
    return SystemSensor(name, options)
