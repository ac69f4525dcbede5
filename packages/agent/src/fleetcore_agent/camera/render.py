"""Render a road scene with a car and a readable licence plate, as JPEG bytes (Pillow).

Self-contained on purpose: this module imports only the standard library and Pillow (and
Pillow only when a function runs), so the platform's simulator can carry a copy without
depending on the agent package.

Thai text needs a font with Thai glyphs (`font` argument, or one of FONT_CANDIDATES when
installed, e.g. fonts-thai-tlwg or fonts-noto-core). Without one, Pillow's default font
draws what it can: the image is for people to look at; the read carries the text.
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (plate as read, region or province): Thai plates with their province, Latin ones.
PLATES: tuple[tuple[str, str], ...] = (
    ("กข 1234", "กรุงเทพมหานคร"),
    ("1กก 9999", "กรุงเทพมหานคร"),
    ("ขค 4521", "เชียงใหม่"),
    ("3กด 708", "ชลบุรี"),
    ("ฒษ 88", "ภูเก็ต"),
    ("งจ 3307", "ขอนแก่น"),
    ("AB-123-CD", "FR"),
    ("7ABC123", "CA"),
    ("KA 01 AB 1234", "IN"),
    ("B MW 2024", "DE"),
    ("WX19 OKE", "GB"),
    ("SGX 4411", "SG"),
)
VEHICLE_TYPES = ("car", "car", "car", "pickup", "van", "truck", "motorcycle")
VEHICLE_COLORS: dict[str, tuple[int, int, int]] = {
    "white": (235, 235, 235),
    "black": (25, 25, 30),
    "silver": (170, 175, 180),
    "red": (180, 30, 35),
    "blue": (35, 70, 160),
    "grey": (110, 110, 115),
}
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/tlwg/Garuda-Bold.ttf",
    "/usr/share/fonts/truetype/tlwg/Loma-Bold.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansThai-Bold.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansThai-Bold.ttf",
    "/usr/share/fonts/truetype/noto/NotoSansThai-Regular.ttf",
)


class PillowMissing(ImportError):
    """Pillow is not installed."""


def pillow() -> Any:
    """The PIL package, or PillowMissing saying how to get it."""
    try:
        import PIL.Image
        import PIL.ImageDraw
        import PIL.ImageFont
    except ImportError:
        raise PillowMissing(
            "Pillow is needed for camera images: pip install 'fleetcore-agent[camera]'"
        ) from None
    return PIL


@dataclass(frozen=True, slots=True)
class Vehicle:
    """What to draw: a vehicle with its plate, and where along the road it is (0..1)."""

    plate: str
    region: str
    vehicle_type: str = "car"
    vehicle_color: str = "white"
    position: float = 0.5


@dataclass(frozen=True, slots=True)
class Rendered:
    """A rendered frame: JPEG bytes, size, and the plate's box [x, y, w, h] (or None)."""

    jpeg: bytes
    width: int
    height: int
    plate_bbox: tuple[int, int, int, int] | None


def _font(size: int, path: str | None) -> Any:
    pil = pillow()
    for candidate in ([path] if path else []) + list(FONT_CANDIDATES):
        if Path(candidate).is_file():
            try:
                return pil.ImageFont.truetype(candidate, size)
            except OSError:  # not a font file after all: try the next one
                continue
    return pil.ImageFont.load_default(size=size)


def render(
    vehicle: Vehicle | None,
    *,
    width: int = 1280,
    height: int = 720,
    seed: int = 0,
    quality: int = 85,
    font: str | None = None,
) -> Rendered:
    """A road with `vehicle` on it (None: the empty road), encoded as JPEG."""
    pil = pillow()
    rng = random.Random(seed)  # noqa: S311 - texture, not secrets
    image = pil.Image.new("RGB", (width, height), (96, 110, 96))
    draw = pil.ImageDraw.Draw(image)
    horizon = height // 3
    draw.rectangle((0, 0, width, horizon), fill=(150, 180, 210))
    draw.rectangle((0, horizon, width, height), fill=(70, 72, 75))
    for _ in range(60):  # a little texture so the JPEG is not trivially small
        x, y = rng.randrange(width), rng.randrange(horizon, height)
        shade = rng.randrange(55, 90)
        draw.ellipse((x, y, x + 6, y + 3), fill=(shade, shade, shade + 3))
    for x in range(0, width, width // 8):  # lane marks
        draw.rectangle((x, height * 2 // 3, x + width // 16, height * 2 // 3 + 6), fill="white")
    if vehicle is None:
        return Rendered(_jpeg(image, quality), width, height, None)
    body = VEHICLE_COLORS.get(vehicle.vehicle_color, (200, 200, 200))
    car_w, car_h = width * 2 // 5, height * 2 // 5
    left = int((width - car_w) * min(1.0, max(0.0, vehicle.position)))
    top = height - car_h - height // 12
    draw.rounded_rectangle((left, top, left + car_w, top + car_h), radius=car_h // 6, fill=body)
    draw.rectangle(  # windscreen
        (left + car_w // 6, top + car_h // 10, left + car_w * 5 // 6, top + car_h * 2 // 5),
        fill=(60, 80, 100),
    )
    for wheel_x in (left + car_w // 8, left + car_w * 7 // 8):
        draw.ellipse(
            (wheel_x - car_h // 7, top + car_h - car_h // 7, wheel_x + car_h // 7, top + car_h),
            fill=(15, 15, 15),
        )
    plate_w, plate_h = car_w * 3 // 5, car_h * 3 // 10
    px, py = left + (car_w - plate_w) // 2, top + car_h * 11 // 20
    draw.rectangle((px, py, px + plate_w, py + plate_h), fill="white", outline="black", width=3)
    big = _font(max(10, plate_h * 11 // 20), font)
    small = _font(max(8, plate_h // 4), font)
    _centred(draw, vehicle.plate, big, px + plate_w // 2, py + plate_h * 7 // 20)
    _centred(draw, vehicle.region, small, px + plate_w // 2, py + plate_h * 8 // 10)
    return Rendered(_jpeg(image, quality), width, height, (px, py, plate_w + 1, plate_h + 1))


def _centred(draw: Any, text: str, font: Any, cx: int, cy: int) -> None:
    try:
        draw.text((cx, cy), text, fill="black", font=font, anchor="mm")
    except (OSError, ValueError, UnicodeError):  # a font that cannot draw it: leave it out
        return


def _jpeg(image: Any, quality: int) -> bytes:
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
