"""Signal models: what a simulated device measures at a given time. Pure and seeded.

A channel is a physical quantity: a base value, a daily (diurnal) cycle peaking at a given
hour, Gaussian noise, a slow random-walk drift, and faults (a spike, a value stuck for a
while, a dropout: no reading), each with a probability per sample. Every value is clamped to
the quantity's physical bounds, which the simulator's profile declares as its range, so no
reading is ever refused.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from enum import StrEnum

DAY_S = 86_400.0
_REVERSION = 0.001  # share of the drift undone per sample


class Fault(StrEnum):
    """What went wrong with a sample, if anything."""

    SPIKE = "spike"  # one value far off the signal
    STUCK = "stuck"  # the last value repeated for a few samples
    DROPOUT = "dropout"  # no reading at all


@dataclass(frozen=True, slots=True)
class FaultRates:
    """Probability per sample that a fault starts, and how long a stuck value lasts."""

    spike: float = 0.005
    stuck: float = 0.002
    dropout: float = 0.01
    stuck_samples: int = 10

    def __post_init__(self) -> None:
        for name in ("spike", "stuck", "dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} probability must be within [0, 1]")
        if self.spike + self.stuck + self.dropout > 1.0:
            raise ValueError("fault probabilities add up to more than 1")


NO_FAULTS = FaultRates(spike=0.0, stuck=0.0, dropout=0.0)


@dataclass(frozen=True, slots=True)
class Channel:
    """One measured quantity: its unit, physical bounds and the shape of its signal."""

    key: str
    unit: str
    low: float  # physical bounds: every value is clamped into [low, high]
    high: float
    base: float
    amplitude: float = 0.0  # half the peak-to-trough of the daily cycle
    peak_hour: float = 15.0  # hour of day (UTC) of the cycle's maximum
    noise: float = 0.0  # standard deviation of the Gaussian noise
    drift: float = 0.0  # standard deviation of the random walk, per sample
    spike: float = 0.0  # size of a spike (either direction)
    digits: int = 2

    def cycle(self, t: float) -> float:
        """The noiseless daily cycle at epoch seconds `t`."""
        phase = 2 * math.pi * ((t / 3600.0 - self.peak_hour) % 24.0) / 24.0
        return self.base + self.amplitude * math.cos(phase)

    def clamp(self, value: float) -> float:
        """`value` within the physical bounds, rounded."""
        return round(min(self.high, max(self.low, value)), self.digits)


class DeviceKind(StrEnum):
    """What a simulated device is: which channels it measures."""

    ENVIRONMENT = "environment"  # temperature and humidity
    MACHINE = "machine"  # motor current and vibration


CHANNELS: dict[DeviceKind, tuple[Channel, ...]] = {
    DeviceKind.ENVIRONMENT: (
        Channel("temperature", "°C", -40.0, 85.0, base=21.0, amplitude=4.0, peak_hour=15.0,
                noise=0.15, drift=0.01, spike=25.0),
        Channel("humidity", "%", 0.0, 100.0, base=50.0, amplitude=12.0, peak_hour=4.0,
                noise=0.8, drift=0.02, spike=40.0, digits=1),
    ),
    DeviceKind.MACHINE: (
        Channel("current", "A", 0.0, 100.0, base=12.0, amplitude=5.0, peak_hour=11.0,
                noise=0.4, drift=0.01, spike=45.0),
        Channel("vibration", "mm/s", 0.0, 50.0, base=2.5, amplitude=0.8, peak_hour=11.0,
                noise=0.15, drift=0.005, spike=20.0, digits=3),
    ),
}  # fmt: skip


def kind_of(index: int) -> DeviceKind:
    """The kind of the fleet's device number `index` (1-based): one in four is a machine."""
    return DeviceKind.MACHINE if index % 4 == 0 else DeviceKind.ENVIRONMENT


def profile_keys() -> list[dict[str, object]]:
    """Every channel as a profile telemetry key, its physical bounds as the range."""
    channels = {c.key: c for kind in DeviceKind for c in CHANNELS[kind]}
    return [
        {"key": c.key, "type": "number", "unit": c.unit, "min": c.low, "max": c.high}
        for c in channels.values()
    ]


@dataclass(frozen=True, slots=True)
class Sample:
    """A device's readings at one time (empty on a dropout) and the fault, if any."""

    values: dict[str, float]
    fault: Fault | None = None


@dataclass
class SignalModel:
    """One device's signal: deterministic for a given seed and sequence of times."""

    kind: DeviceKind
    seed: int
    faults: FaultRates = field(default_factory=FaultRates)
    _random: random.Random = field(init=False, repr=False)
    _offset: dict[str, float] = field(init=False, repr=False)  # per-device bias + drift
    _last: dict[str, float] = field(init=False, repr=False)
    _stuck_left: int = field(init=False, default=0, repr=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 (a simulation, not a secret)
        # Each device of a kind sits a little apart from its siblings.
        self._offset = {c.key: self._random.gauss(0.0, c.noise * 3) for c in self.channels}
        self._last = {}

    @property
    def channels(self) -> tuple[Channel, ...]:
        """The quantities this device measures."""
        return CHANNELS[self.kind]

    def sample(self, t: float) -> Sample:
        """The readings at epoch seconds `t` (call with increasing times)."""
        rnd = self._random
        for c in self.channels:  # the drift moves whether or not a reading goes out
            # A random walk pulled gently back (Ornstein-Uhlenbeck), so it never runs away.
            offset = self._offset[c.key] * (1.0 - _REVERSION)
            self._offset[c.key] = offset + (rnd.gauss(0.0, c.drift) if c.drift else 0.0)
        if self._stuck_left and self._last:
            self._stuck_left -= 1
            return Sample(dict(self._last), Fault.STUCK)
        draw = rnd.random()
        rates = self.faults
        if draw < rates.dropout:
            return Sample({}, Fault.DROPOUT)
        fault = None
        if draw < rates.dropout + rates.stuck and self._last:
            self._stuck_left = max(0, rates.stuck_samples - 1)
            return Sample(dict(self._last), Fault.STUCK)
        values = {}
        spike_key = None
        if draw >= 1.0 - rates.spike:
            fault = Fault.SPIKE
            spike_key = self.channels[rnd.randrange(len(self.channels))].key
        for c in self.channels:
            value = c.cycle(t) + self._offset[c.key] + rnd.gauss(0.0, c.noise)
            if c.key == spike_key:
                value += c.spike * rnd.choice((-1.0, 1.0))
            values[c.key] = c.clamp(value)
        self._last = values
        return Sample(dict(values), fault)
