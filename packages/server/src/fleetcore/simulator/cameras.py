"""Simulated gate cameras: plate reads with images, as an edge camera would send them.

A camera "sees" vehicles from a seeded list of plates (Thai plates with their province, and
Latin ones), renders each frame with Pillow (a noisy scene, a car-ish box, the plate drawn
where the bounding box says) and posts the read with its JPEG as one multipart request to
POST /api/v1/devices/me/events, the same request the agent's camera plug-in makes. A share of
the plates is the "wanted" list, so a watchlist made of them raises alerts; a vehicle often
stays in view for a few seconds and is read again (duplicate suppression makes that one visit).

Deterministic for a seed: the same seed gives the same reads and images.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from PIL import Image, ImageDraw, ImageFont

EVENTS_PATH = "/api/v1/devices/me/events"

# (plate as printed, region): Bangkok and provincial Thai plates, and a few Latin ones.
PLATES: tuple[tuple[str, str | None], ...] = (
    ("กข 1234", "กรุงเทพมหานคร"),
    ("1กท 5678", "กรุงเทพมหานคร"),
    ("ฆง 9021", "เชียงใหม่"),
    ("2ขค 4410", "กรุงเทพมหานคร"),
    ("บด 777", "ภูเก็ต"),
    ("ศม 3056", "ขอนแก่น"),
    ("กก 8", "ชลบุรี"),
    ("7กษ 1290", "กรุงเทพมหานคร"),
    ("นข 6643", "นครราชสีมา"),
    ("ผจ 2101", "สงขลา"),
    ("AB-123-CD", None),
    ("7ABC123", None),
    ("KL 04 AB 1234", None),
    ("B 1234 XYZ", None),
    ("WX1O 2IO", None),  # letters that read like digits: search must find it typed "WX10 210"
    ("ZH 9087", None),
)
# The plates a demo or simulated watchlist holds (by index in PLATES).
WANTED = (2, 11, 14)
VEHICLES = ("car", "pickup", "van", "motorcycle", "truck")
COLOURS = ("white", "black", "silver", "red", "blue", "grey")
_PAINT = {
    "white": (235, 235, 235),
    "black": (30, 30, 30),
    "silver": (170, 175, 180),
    "red": (170, 30, 30),
    "blue": (30, 60, 160),
    "grey": (110, 110, 110),
}


def wanted_plates() -> list[str]:
    """The plates of the simulated watchlist, as printed."""
    return [PLATES[i][0] for i in WANTED]


@dataclass(frozen=True, slots=True)
class PlateRead:
    """One read: the event's data, and the image it came from."""

    ts_ms: int
    data: dict[str, Any]
    jpeg: bytes

    def event(self) -> dict[str, Any]:
        """The plate_read event as the device sends it (the image is the part "image")."""
        return {
            "type": "plate_read",
            "ts": self.ts_ms,
            "data": self.data,
            "media": ["image"],
        }

    def multipart(self) -> dict[str, tuple[str | None, bytes, str]]:
        """httpx `files=`: the event's JSON and the image, as the agent sends them."""
        return {
            "event": (None, orjson.dumps(self.event()), "application/json"),
            "image": ("read.jpg", self.jpeg, "image/jpeg"),
        }


@cache
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    # A Thai-capable font when the machine has one; otherwise Pillow's own (Thai letters then
    # show as boxes: the image is for people, the read carries the text).
    for path in (
        "/usr/share/fonts/truetype/tlwg/Garuda-Bold.ttf",
        "/usr/share/fonts/truetype/noto/NotoSansThai-Bold.ttf",
        "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    ):
        if Path(path).exists():
            return ImageFont.truetype(path, size)
    return ImageFont.load_default(size=size)


def render(
    plate: str,
    region: str | None,
    *,
    rng: random.Random,
    width: int = 1280,
    height: int = 720,
    colour: str = "white",
    noise: float = 10.0,
    quality: int = 85,
) -> tuple[bytes, list[int]]:
    """A frame with the vehicle and its plate; the JPEG and the plate's box [x, y, w, h].

    `noise` is the sensor noise's sigma: it sets how well the JPEG compresses (40 at 1280x720
    gives about 200 KB, a camera's typical frame).
    """
    # Sensor noise from the seeded generator (Pillow's effect_noise is not seedable).
    grain = np.random.default_rng(rng.getrandbits(64)).normal(128.0, noise, (height, width))
    frame = Image.fromarray(np.clip(grain, 0, 255).astype(np.uint8), "L").convert("RGB")
    draw = ImageDraw.Draw(frame)
    car_w, car_h = int(width * rng.uniform(0.35, 0.5)), int(height * rng.uniform(0.4, 0.55))
    car_x = rng.randint(width // 10, width - car_w - width // 10)
    car_y = height - car_h - rng.randint(10, height // 8)
    draw.rounded_rectangle(
        (car_x, car_y, car_x + car_w, car_y + car_h), radius=30, fill=_PAINT[colour]
    )
    plate_w, plate_h = car_w // 3, max(24, car_h // 6)
    x = car_x + (car_w - plate_w) // 2
    y = car_y + car_h - plate_h - car_h // 8
    draw.rectangle((x, y, x + plate_w, y + plate_h), fill=(250, 250, 250), outline=(0, 0, 0))
    font = _font(max(12, plate_h // 2))
    draw.text((x + 6, y + 2), plate, fill=(0, 0, 0), font=font)
    if region:
        small = _font(max(10, plate_h // 4))
        draw.text((x + 6, y + plate_h * 2 // 3), region, fill=(0, 0, 0), font=small)
    out = io.BytesIO()
    frame.save(out, "JPEG", quality=quality)
    return out.getvalue(), [x, y, plate_w, plate_h]


class CameraStream:
    """The reads one camera makes: each vehicle read 1-3 times a few seconds apart, a share
    of them wanted plates, the rest from the list; confidences mostly high."""

    def __init__(
        self,
        camera: str,
        *,
        seed: int,
        wanted_share: float = 0.1,
        width: int = 1280,
        height: int = 720,
        noise: float = 10.0,
    ) -> None:
        self.camera = camera
        self.rng = random.Random(seed)  # noqa: S311 (a simulation, not a secret)
        self.wanted_share = wanted_share
        self.width, self.height, self.noise = width, height, noise
        self._vehicle: tuple[int, str, str] | None = None  # plate index, type, colour
        self._reads_left = 0  # further reads of the vehicle in view

    def _in_view(self) -> tuple[int, str, str]:
        if self._vehicle is not None and self._reads_left > 0:
            self._reads_left -= 1
            return self._vehicle
        if self.rng.random() < self.wanted_share:
            index = self.rng.choice(WANTED)
        else:
            index = self.rng.randrange(len(PLATES))
        self._vehicle = (index, self.rng.choice(VEHICLES), self.rng.choice(COLOURS))
        self._reads_left = self.rng.randint(0, 2)
        return self._vehicle

    def in_view_again(self) -> bool:
        """True if the next read is of the vehicle just read (it is still in view)."""
        return self._vehicle is not None and self._reads_left > 0

    def next(self, ts_ms: int) -> PlateRead:
        """The camera's next read, captured at `ts_ms`."""
        index, vehicle, colour = self._in_view()
        plate, region = PLATES[index]
        jpeg, bbox = render(
            plate,
            region,
            rng=self.rng,
            width=self.width,
            height=self.height,
            colour=colour,
            noise=self.noise,
        )
        data: dict[str, Any] = {
            "plate": plate,
            "confidence": round(self.rng.uniform(0.82, 0.99), 3),
            "direction": self.rng.choice(("in", "out")),
            "lane": self.rng.randint(1, 2),
            "vehicle_type": vehicle,
            "vehicle_color": colour,
            "bbox": bbox,
            "camera": self.camera,
        }
        if region is not None:
            data["region"] = region
        return PlateRead(ts_ms=ts_ms, data=data, jpeg=jpeg)
