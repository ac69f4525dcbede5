"""The detector interface (frame → plate reads), the simulated detector, and the loader.

The real model (the AI accelerator's licence-plate reader) is the user's. Plug it in with a
dotted path in the config::

    camera:
      detector:
        type: my_lpr.hailo:make_detector   # module:attribute
        options: {model: /opt/lpr/plates.hef, threshold: 0.5}

The attribute is called with the `options` mapping and returns an object with
``detect(frame: Frame) -> list[PlateRead | Mapping]`` and ``close()``. `frame.jpeg` holds
the JPEG bytes, `frame.width` and `frame.height` its size. A mapping is read with the same
keys as `PlateRead`; a read with a bad field is logged and left out, never sent.
"""

from __future__ import annotations

import importlib
import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from fleetcore_agent.camera import render
from fleetcore_agent.camera.sources import DIRECTIONS, Frame
from fleetcore_agent.sensors.base import SensorError

log = logging.getLogger("fleetcore_agent.camera")


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One plate read in one frame; bbox is [x, y, w, h] in the frame's pixels."""

    plate: str
    confidence: float
    bbox: tuple[int, int, int, int]
    region: str | None = None
    vehicle_type: str | None = None
    vehicle_color: str | None = None
    direction: str | None = None  # "in" or "out"
    lane: int | None = None

    def data(self, camera: str) -> dict[str, Any]:
        """The `data` of the plate_read event (fields not known are left out)."""
        out: dict[str, Any] = {"plate": self.plate, "confidence": round(self.confidence, 4)}
        optional = {
            "region": self.region,
            "direction": self.direction,
            "lane": self.lane,
            "vehicle_type": self.vehicle_type,
            "vehicle_color": self.vehicle_color,
        }
        out.update({k: v for k, v in optional.items() if v is not None})
        out["bbox"] = list(self.bbox)
        out["camera"] = camera
        return out


class Detector(Protocol):
    """Reads plates in a frame."""

    def detect(self, frame: Frame) -> Sequence[PlateRead | Mapping[str, Any]]:
        """The plates seen in `frame` (empty when none)."""
        ...

    def close(self) -> None:
        """Release the model."""
        ...


# The platform's limits for a plate_read (fleetcore.plates.reads): a read outside them would be
# refused there for good, so it is left out here, where the detector's mistake can be logged.
MAX_PLATE_TEXT = 48
MAX_TEXT = 64
MAX_LANE = 99


def _text(raw: Any, name: str, *, required: bool = False, limit: int = MAX_TEXT) -> str | None:
    if raw is None and not required:
        return None
    if not isinstance(raw, str) or not raw.strip() or len(raw.strip()) > limit:
        raise ValueError(f"{name}: text of 1..{limit} characters, got {raw!r}")
    return raw.strip()


def checked(raw: PlateRead | Mapping[str, Any], frame: Frame) -> PlateRead:
    """A read with every field checked and its box clipped to the frame; ValueError if bad."""
    get = raw.get if isinstance(raw, Mapping) else lambda key: getattr(raw, key, None)
    plate = _text(get("plate"), "plate", required=True, limit=MAX_PLATE_TEXT)
    assert plate is not None
    confidence = get("confidence")
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise ValueError(f"confidence: a number in 0..1, got {confidence!r}")
    if not math.isfinite(confidence) or not 0 <= confidence <= 1:
        raise ValueError(f"confidence: a number in 0..1, got {confidence!r}")
    box = get("bbox")
    if not isinstance(box, Sequence) or len(box) != 4:
        raise ValueError(f"bbox: [x, y, w, h], got {box!r}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in box):
        raise ValueError(f"bbox: [x, y, w, h] numbers, got {box!r}")
    x = min(max(0, int(box[0])), frame.width - 1)
    y = min(max(0, int(box[1])), frame.height - 1)
    w = min(max(1, int(box[2])), frame.width - x)
    h = min(max(1, int(box[3])), frame.height - y)
    direction = get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction: in or out, got {direction!r}")
    lane = get("lane")
    if lane is not None and (
        isinstance(lane, bool) or not isinstance(lane, int) or not 0 <= lane <= MAX_LANE
    ):
        raise ValueError(f"lane: an integer from 0 to {MAX_LANE}, got {lane!r}")
    return PlateRead(
        plate=plate,
        confidence=float(confidence),
        bbox=(x, y, w, h),
        region=_text(get("region"), "region"),
        vehicle_type=_text(get("vehicle_type"), "vehicle_type"),
        vehicle_color=_text(get("vehicle_color"), "vehicle_color"),
        direction=direction,
        lane=lane,
    )


class SimulatedDetector:
    """Reads back what the simulated camera drew; on a real camera's frames (with
    `read_real_frames`, the default), one plate from the list in the middle of each frame.

    Deterministic with `seed`: the same frames give the same confidences and misses."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SensorError(f"camera.detector.options.seed: an integer, got {seed!r}")
        self.miss_rate = _share(options, "miss_rate", 0.0)
        # The simulated model's confidences are uniform in [confidence_from, confidence_to].
        self.low = _share(options, "confidence_from", 0.6)
        self.high = _share(options, "confidence_to", 0.99)
        if self.high < self.low:
            raise SensorError("camera.detector.options.confidence_to: below confidence_from")
        self.invent = options.get("read_real_frames", True) is not False
        self._rng = random.Random(seed)  # noqa: S311 - simulation

    def detect(self, frame: Frame) -> list[PlateRead]:
        """One read per drawn plate (some missed when miss_rate > 0)."""
        reads: list[PlateRead] = []
        for drawn in frame.drawn:
            confidence = self._rng.uniform(self.low, self.high)
            if self._rng.random() < self.miss_rate:
                continue
            reads.append(
                PlateRead(
                    drawn.plate,
                    round(confidence, 3),
                    drawn.bbox,
                    drawn.region,
                    drawn.vehicle_type,
                    drawn.vehicle_color,
                    drawn.direction,
                    drawn.lane,
                )
            )
        if not frame.simulated and self.invent and frame.width >= 8:
            # A real camera with the simulated model: a plausible read in the middle.
            plate, region = self._rng.choice(render.PLATES)
            w, h = frame.width // 4, frame.height // 10
            box = ((frame.width - w) // 2, (frame.height - h) * 2 // 3, w, max(1, h))
            confidence = round(self._rng.uniform(self.low, self.high), 3)
            reads.append(PlateRead(plate, confidence, box, region, "car", None, "in", 1))
        return reads

    def close(self) -> None:
        """Nothing to release."""


def _share(options: Mapping[str, Any], key: str, default: float) -> float:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not 0 <= raw <= 1:
        raise SensorError(f"camera.detector.options.{key}: a number in 0..1, got {raw!r}")
    return float(raw)


def create_detector(kind: str, options: Mapping[str, Any]) -> Detector:
    """`simulated`, or `module:attribute` called with the options; SensorError if neither."""
    if kind == "simulated":
        return SimulatedDetector(options)
    module_name, _, attribute = kind.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise SensorError(f"camera.detector.type: cannot import {module_name!r}: {exc}") from None
    for part in attribute.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise SensorError(f"camera.detector.type: {module_name!r} has no {attribute!r}")
    try:
        detector = target(dict(options))
    except SensorError:
        raise
    except Exception as exc:  # the user's code: say where it failed, do not crash
        raise SensorError(f"camera.detector: {kind} failed to start: {exc}") from exc
    if not callable(getattr(detector, "detect", None)):
        raise SensorError(f"camera.detector: {kind} returned an object without detect()")
    return detector  # type: ignore[no-any-return]
