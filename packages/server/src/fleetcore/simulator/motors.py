"""Signal model of an industrial motor (the `make run` machines): pure, seeded, and a
function of time alone, so a history sent today and the live readings of a later start agree.

A motor on a variable-speed drive reports its current (A), the RMS velocity of its bearing
vibration (mm/s, as ISO 10816 measures it), its housing temperature (°C) and its speed
(rpm). Each value is the motor's level, a daily cycle (the shifts' load, the hall's
temperature), a slow smooth wander (load and ambient changes lasting hours) and seeded
Gaussian noise drawn from the timestamp, so the same time always gives the same reading.

A degrading motor's vibration rises from its healthy level toward the ISO 10816 class II
boundary (7.1 mm/s, "unsatisfactory": not for long-term operation), reaching it at `fails_at`
along an exponential curve (bearing wear speeds up as it goes), and keeps rising
past it, up to zone D, if nobody acts. Episodes are what a sensor or a process does now and
then: a jam's current spike (one reading) and a temperature sensor that froze for a while.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field, replace

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ISO_10816_CLASS_II_LIMIT = 7.1  # mm/s: the boundary between zones C and D for 15-75 kW motors
ZONE_D_CAP = 11.2  # mm/s: a neglected motor does not vibrate beyond this in the model
# A spike lasts one reading: the history's cadence (10 min) is the widest there is, and live
# readings (seconds apart) start after every episode.
_SPIKE_WIDTH_MS = 10 * 60_000

# The profile's telemetry keys: physical bounds, which analytics also uses as the range.
KEYS: list[dict[str, object]] = [
    {"key": "current", "type": "number", "unit": "A", "min": 0, "max": 80},
    {"key": "vibration_rms", "type": "number", "unit": "mm/s", "min": 0, "max": 45},
    {"key": "temperature", "type": "number", "unit": "°C", "min": -20, "max": 90},
    {"key": "speed", "type": "number", "unit": "rpm", "min": 0, "max": 1800},
]


@dataclass(frozen=True, slots=True)
class Spike:
    """One reading of `key` at `at_ms` (the first reading at or after it) off by `by`."""

    key: str
    at_ms: int
    by: float


@dataclass(frozen=True, slots=True)
class Stuck:
    """`key` repeats the value it had at `from_ms` until `until_ms` (a frozen sensor)."""

    key: str
    from_ms: int
    until_ms: int


@dataclass(frozen=True, slots=True)
class Motor:
    """One motor's levels, the degradation it is in (if any) and its episodes."""

    seed: int
    speed_rpm: float
    current_a: float
    temperature_c: float
    vibration_mm_s: float
    fails_at_ms: int | None = None  # a degrading motor: vibration reaches 7.1 mm/s then
    degrading_for_ms: int = 12 * DAY_MS  # how long before fails_at the rise began
    spikes: tuple[Spike, ...] = ()
    stuck: tuple[Stuck, ...] = ()
    _phases: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rng = random.Random(self.seed)  # noqa: S311 (a simulation, not a secret)
        object.__setattr__(self, "_phases", tuple(rng.uniform(0, 2 * math.pi) for _ in range(4)))

    def vibration_level(self, ts: int) -> float:
        """The noiseless vibration RMS at `ts` (mm/s): exponential growth from the healthy
        level, from when the degradation began, through 7.1 mm/s at fails_at."""
        if self.fails_at_ms is None:
            return self.vibration_mm_s
        began = self.fails_at_ms - self.degrading_for_ms
        gone = max(0.0, (ts - began) / self.degrading_for_ms)  # 1 at fails_at
        growth = math.pow(ISO_10816_CLASS_II_LIMIT / self.vibration_mm_s, gone)
        return min(self.vibration_mm_s * growth, ZONE_D_CAP)

    def reading(self, ts: int) -> dict[str, float]:
        """The motor's readings at epoch milliseconds `ts`."""
        noise = random.Random(self.seed * 1_000_003 + ts)  # noqa: S311 (a simulation)
        hours = ts / HOUR_MS
        shift = math.cos(2 * math.pi * (hours - 11.0) / 24.0)  # load peaks late morning
        hall = math.cos(2 * math.pi * (hours - 15.0) / 24.0)  # the hall is warmest at 15:00
        a, b, c, d = self._phases
        load = 0.6 * math.sin(2 * math.pi * hours / 7.3 + a) + 0.4 * math.sin(
            2 * math.pi * hours / 17.9 + b
        )
        ambient = math.sin(2 * math.pi * hours / 31.0 + c)
        wobble = math.sin(2 * math.pi * hours / 5.1 + d)
        values = {
            "current": self.current_a + 1.2 * shift + 0.4 * load + noise.gauss(0, 0.25),
            "vibration_rms": self.vibration_level(ts) * (1 + 0.04 * wobble + 0.02 * load)
            + noise.gauss(0, 0.1),
            "temperature": self.temperature_c
            + 3.0 * hall
            + 0.8 * shift
            + 0.5 * ambient
            + noise.gauss(0, 0.2),
            "speed": self.speed_rpm,
        }
        for spike in self.spikes:
            if spike.at_ms <= ts < spike.at_ms + _SPIKE_WIDTH_MS:
                values[spike.key] += spike.by
        for stuck in self.stuck:
            if stuck.from_ms <= ts < stuck.until_ms:
                values[stuck.key] = self._frozen(stuck)
        return {key: round(max(value, 0.0), 3) for key, value in values.items()}

    def _frozen(self, stuck: Stuck) -> float:
        """The value the sensor froze at (its reading at from_ms, without the episode)."""
        plain = replace(self, spikes=(), stuck=())
        return plain.reading(stuck.from_ms)[stuck.key]
