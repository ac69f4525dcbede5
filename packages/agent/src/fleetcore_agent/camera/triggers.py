"""When to capture: on an interval, on motion in the picture, or on a PIR sensor's motion.

A trigger is asked on every look (`poll_s`) and returns the frame to read, or None.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from fleetcore_agent.camera import render
from fleetcore_agent.camera.sources import Frame
from fleetcore_agent.sensors.base import Sensor, SensorError

Grab = Callable[[], Frame]


class Trigger(Protocol):
    """Decides whether this look is a capture."""

    def check(self, grab: Grab) -> Frame | None:
        """The frame to read now, or None."""
        ...


class IntervalTrigger:
    """Every look is a capture (the look interval is the capture interval)."""

    def check(self, grab: Grab) -> Frame | None:
        """Always a frame."""
        return grab()


class PirTrigger:
    """Capture while a PIR sensor (the agent's `pir` plug-in, or any sensor with a boolean
    `motion` key) sees motion; the frame is grabbed only then."""

    def __init__(self, sensor: Sensor) -> None:
        self.sensor = sensor

    def check(self, grab: Grab) -> Frame | None:
        """A frame when the sensor reads motion."""
        return grab() if self.sensor.read().get("motion") is True else None


class MotionTrigger:
    """Frame differencing on small greyscale copies: a capture when enough pixels changed.

    `threshold` is the grey-level change (0..255) that counts a pixel as changed;
    `min_changed` the share of changed pixels (0..1) that counts as motion; `size` the width
    of the small copy (the JPEG decoder scales down while decoding, which keeps this cheap)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        render.pillow()
        self.threshold = _number(options, "threshold", 25, 1, 255)
        self.min_changed = _number(options, "min_changed", 0.01, 0.0001, 1)
        self.size = int(_number(options, "size", 64, 16, 640))
        self._previous: Any = None
        self.last_changed = 0.0

    def small(self, frame: Frame) -> Any:
        """The frame as a small greyscale image."""
        pil = render.pillow()
        image = pil.Image.open(io.BytesIO(frame.jpeg))
        height = max(1, round(self.size * frame.height / max(1, frame.width)))
        image.draft("L", (self.size, height))
        return image.convert("L").resize((self.size, height))

    def changed(self, frame: Frame) -> float:
        """Share of pixels that changed since the previous frame (0 for the first)."""
        small = self.small(frame)
        previous, self._previous = self._previous, small
        if previous is None or previous.size != small.size:
            return 0.0
        from PIL import ImageChops  # Pillow is there: small() opened the frame with it

        mask = ImageChops.difference(small, previous).point(
            lambda p: 255 if p > self.threshold else 0
        )
        histogram: list[int] = mask.histogram()
        total = int(small.size[0]) * int(small.size[1])
        return float(histogram[255]) / total

    def check(self, grab: Grab) -> Frame | None:
        """The frame when it differs enough from the previous one."""
        frame = grab()
        self.last_changed = self.changed(frame)
        return frame if self.last_changed >= self.min_changed else None


def _number(options: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not low <= raw <= high:
        raise SensorError(f"camera.trigger.options.{key}: a number in {low:g}..{high:g}")
    return float(raw)


def create_trigger(kind: str, options: Mapping[str, Any], sensors: Mapping[str, Sensor]) -> Trigger:
    """A trigger by type; `pir` uses the agent's sensor named by the `sensor` option."""
    if kind == "interval":
        return IntervalTrigger()
    if kind == "motion":
        try:
            return MotionTrigger(options)
        except render.PillowMissing as exc:
            raise SensorError(f"camera.trigger: {exc}") from None
    if kind == "pir":
        name = options.get("sensor")
        sensor = sensors.get(name) if isinstance(name, str) else None
        if sensor is None:
            raise SensorError(
                f"camera.trigger.options.sensor: the name of a configured pir sensor, got {name!r}"
            )
        return PirTrigger(sensor)
    raise SensorError(f"camera.trigger.type: interval, motion or pir, got {kind!r}")
