"""Where frames come from: a simulated camera (Pillow), picamera2 or OpenCV.

Every source hands out `Frame`s: JPEG bytes, their size and the capture time. The real
sources sit behind optional imports and fail with a SensorError that says what to install.
"""

from __future__ import annotations

import importlib
import io
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from fleetcore_agent.camera import render
from fleetcore_agent.sensors.base import SensorError

DIRECTIONS = ("in", "out")


@dataclass(frozen=True, slots=True)
class DrawnPlate:
    """What the simulated camera drew: the truth its simulated detector reads back."""

    plate: str
    region: str
    vehicle_type: str
    vehicle_color: str
    direction: str
    lane: int
    bbox: tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Frame:
    """One captured frame, JPEG-encoded; `drawn` is only known for simulated frames."""

    jpeg: bytes
    width: int
    height: int
    ts_ms: int
    drawn: tuple[DrawnPlate, ...] = ()
    simulated: bool = False


class CaptureSource(Protocol):
    """A camera: `grab` returns the current frame."""

    def grab(self) -> Frame:
        """The current frame (blocks for at most a frame time)."""
        ...

    def close(self) -> None:
        """Release the camera."""
        ...


def _now_ms() -> int:
    return int(time.time() * 1000)


def _int(options: Mapping[str, Any], key: str, default: int, low: int, high: int) -> int:
    raw = options.get(key, default)
    if isinstance(raw, bool) or not isinstance(raw, int) or not low <= raw <= high:
        raise SensorError(f"camera.source.options.{key}: an integer in {low}..{high}, got {raw!r}")
    return raw


def _plates(raw: Any) -> tuple[tuple[str, str], ...]:
    if raw is None:
        return render.PLATES
    if not isinstance(raw, list) or not raw:
        raise SensorError("camera.source.options.plates: a non-empty list of {plate, region}")
    out: list[tuple[str, str]] = []
    for index, item in enumerate(raw):
        text = item.get("plate") if isinstance(item, dict) else item
        region = item.get("region", "") if isinstance(item, dict) else ""
        if not isinstance(text, str) or not text.strip() or not isinstance(region, str):
            raise SensorError(f"camera.source.options.plates[{index}]: expected {{plate, region}}")
        out.append((text.strip(), region.strip()))
    return tuple(out)


class SimulatedCamera:
    """Vehicles pass one after another: an empty road, then the vehicle moving across.

    Vehicle k (its plate from the seeded list, type, colour, direction, lane) depends only
    on the seed and k, so two cameras with the same seed show the same traffic."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        render.pillow()  # fail now, with the install hint, rather than at the first frame
        self.width = _int(options, "width", 1280, 160, 4096)
        self.height = _int(options, "height", 720, 120, 4096)
        self.quality = _int(options, "quality", 85, 10, 95)
        self.frames_per_vehicle = _int(options, "frames_per_vehicle", 4, 2, 1000)
        seed = options.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise SensorError(f"camera.source.options.seed: an integer, got {seed!r}")
        self.seed = seed
        font = options.get("font")
        if font is not None and not isinstance(font, str):
            raise SensorError("camera.source.options.font: a path to a TrueType font")
        self.font = font
        self.plates = _plates(options.get("plates"))
        self.frame = 0

    def vehicle(self, k: int) -> tuple[render.Vehicle, str, int]:
        """Vehicle number k, its direction and lane."""
        rng = random.Random(f"{self.seed}:{k}")  # noqa: S311 - simulation
        plate, region = self.plates[rng.randrange(len(self.plates))]
        kind = rng.choice(render.VEHICLE_TYPES)
        colour = rng.choice(list(render.VEHICLE_COLORS))
        direction, lane = rng.choice(DIRECTIONS), rng.randint(1, 2)
        return render.Vehicle(plate, region, kind, colour), direction, lane

    def grab(self) -> Frame:
        """The next frame of the traffic."""
        k, step = divmod(self.frame, self.frames_per_vehicle)
        self.frame += 1
        ts = _now_ms()
        options = {"width": self.width, "height": self.height, "quality": self.quality}
        if step == 0:  # the road between two vehicles
            empty = render.render(None, seed=self.seed, font=self.font, **options)
            return Frame(empty.jpeg, empty.width, empty.height, ts, simulated=True)
        vehicle, direction, lane = self.vehicle(k)
        progress = step / (self.frames_per_vehicle - 1) if self.frames_per_vehicle > 2 else 0.5
        position = progress if direction == "in" else 1 - progress
        shown = render.Vehicle(
            vehicle.plate, vehicle.region, vehicle.vehicle_type, vehicle.vehicle_color, position
        )
        out = render.render(shown, seed=self.seed, font=self.font, **options)
        assert out.plate_bbox is not None  # a vehicle always has its plate drawn
        drawn = DrawnPlate(
            vehicle.plate,
            vehicle.region,
            vehicle.vehicle_type,
            vehicle.vehicle_color,
            direction,
            lane,
            out.plate_bbox,
        )
        return Frame(out.jpeg, out.width, out.height, ts, (drawn,), simulated=True)

    def close(self) -> None:
        """Nothing to release."""


def _needs(module: str, hint: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise SensorError(f"camera.source: needs {module}; {hint}") from None


class Picamera2Camera:
    """A Raspberry Pi camera through picamera2 (Raspberry Pi OS: python3-picamera2)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        module = _needs(
            "picamera2",
            "on Raspberry Pi OS: sudo apt install python3-picamera2 "
            "(and a virtualenv made with --system-site-packages)",
        )
        render.pillow()
        self.quality = _int(options, "quality", 85, 10, 95)
        size = (_int(options, "width", 1920, 160, 9152), _int(options, "height", 1080, 120, 6944))
        self._camera = module.Picamera2()
        self._camera.configure(self._camera.create_still_configuration(main={"size": size}))
        self._camera.start()

    def grab(self) -> Frame:
        """Capture a still and encode it."""
        ts = _now_ms()
        image = self._camera.capture_image("main").convert("RGB")
        out = io.BytesIO()
        image.save(out, format="JPEG", quality=self.quality)
        return Frame(out.getvalue(), image.width, image.height, ts)

    def close(self) -> None:
        """Stop and release the camera."""
        self._camera.stop()
        self._camera.close()


class OpenCvCamera:
    """A USB or network camera through OpenCV (`fleetcore-agent[opencv]`)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._cv2 = _needs("cv2", "install fleetcore-agent[opencv]")
        device = options.get("device", 0)
        if isinstance(device, bool) or not isinstance(device, int | str):
            raise SensorError("camera.source.options.device: a camera index or a stream URL")
        self.quality = _int(options, "quality", 85, 10, 95)
        self._capture = self._cv2.VideoCapture(device)
        if not self._capture.isOpened():
            raise SensorError(f"camera.source: OpenCV cannot open device {device!r}")
        for key, prop in (("width", "CAP_PROP_FRAME_WIDTH"), ("height", "CAP_PROP_FRAME_HEIGHT")):
            if key in options:
                self._capture.set(getattr(self._cv2, prop), _int(options, key, 0, 160, 9152))

    def grab(self) -> Frame:
        """Read a frame and encode it."""
        ts = _now_ms()
        ok, image = self._capture.read()
        if not ok:
            raise SensorError("camera.source: OpenCV returned no frame")
        params = [int(self._cv2.IMWRITE_JPEG_QUALITY), self.quality]
        encoded, buffer = self._cv2.imencode(".jpg", image, params)
        if not encoded:
            raise SensorError("camera.source: OpenCV could not encode the frame")
        height, width = int(image.shape[0]), int(image.shape[1])
        return Frame(bytes(buffer), width, height, ts)

    def close(self) -> None:
        """Release the device."""
        self._capture.release()


SOURCES: dict[str, Callable[[Mapping[str, Any]], CaptureSource]] = {
    "simulated": SimulatedCamera,
    "picamera2": Picamera2Camera,
    "opencv": OpenCvCamera,
}


def create_source(kind: str, options: Mapping[str, Any]) -> CaptureSource:
    """A capture source by type; SensorError for an unknown type or a missing library."""
    factory = SOURCES.get(kind)
    if factory is None:
        raise SensorError(f"camera.source.type: one of {', '.join(SOURCES)}, got {kind!r}")
    try:
        source = factory(options)
    except render.PillowMissing as exc:
        raise SensorError(f"camera.source: {exc}") from None
    return source
