"""Edge health for camera devices, and the thermal governor that slows capture when hot.

CPU temperature comes from a thermal zone file (millidegrees, as Linux writes it), the
Raspberry Pi's throttling state from `vcgencmd get_throttled`; either is left out where the
device has none. Memory and disk come from psutil.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil

from fleetcore_agent.sensors.base import Value

THERMAL_ZONE = "/sys/class/thermal/thermal_zone0/temp"
# Bits of `vcgencmd get_throttled`: what is happening now (the sticky "has occurred" bits
# 16..19 are in edge_throttled for who wants them).
THROTTLE_BITS = {
    "edge_under_voltage": 0,
    "edge_freq_capped": 1,
    "edge_throttling": 2,
    "edge_soft_temp_limit": 3,
}


def cpu_temp_c(path: str) -> float | None:
    """The temperature in °C from a thermal zone file, or None when there is none."""
    try:
        raw = Path(path).read_text().strip()
        value = float(raw)
    except (OSError, ValueError):
        return None
    return value / 1000 if abs(value) > 200 else value  # millidegrees, or degrees already


def throttled() -> int | None:
    """The Raspberry Pi's throttling bits, or None off a Pi (no vcgencmd) or on failure."""
    vcgencmd = shutil.which("vcgencmd")
    if vcgencmd is None:
        return None
    try:
        done = subprocess.run(  # noqa: S603 - fixed arguments, found on PATH
            [vcgencmd, "get_throttled"], capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    _, _, value = done.stdout.strip().partition("=")
    try:
        return int(value, 16)
    except ValueError:
        return None


def edge_health(thermal_path: str, disk_path: Path) -> dict[str, Value]:
    """CPU temperature, throttling, memory and disk, as telemetry keys."""
    out: dict[str, Value] = {
        "edge_memory_percent": float(psutil.virtual_memory().percent),
        "edge_disk_percent": float(psutil.disk_usage(str(disk_path)).percent),
    }
    temp = cpu_temp_c(thermal_path)
    if temp is not None:
        out["edge_cpu_temp_c"] = round(temp, 2)
    bits = throttled()
    if bits is not None:
        out["edge_throttled"] = bits
        for key, bit in THROTTLE_BITS.items():
            out[key] = bool(bits >> bit & 1)
    return out


@dataclass(slots=True)
class ThermalGovernor:
    """Above `hot_c` capture slows (interval times `slow_factor`) or pauses; back at or below
    `cool_c` it resumes. The gap between the two keeps it from flapping."""

    hot_c: float
    cool_c: float
    action: str = "slow"  # slow or pause
    slow_factor: float = 4.0
    hot: bool = False

    def update(self, temp_c: float | None) -> str | None:
        """Feed a temperature; `throttled` or `resumed` when the state changed."""
        if temp_c is None:
            return None  # no thermometer: never throttle on a guess
        if not self.hot and temp_c >= self.hot_c:
            self.hot = True
            return "throttled"
        if self.hot and temp_c <= self.cool_c:
            self.hot = False
            return "resumed"
        return None

    @property
    def paused(self) -> bool:
        """Capture stops altogether."""
        return self.hot and self.action == "pause"

    @property
    def factor(self) -> float:
        """What the capture intervals are multiplied by now."""
        return self.slow_factor if self.hot and self.action == "slow" else 1.0
