"""Plate reads sent as a camera sends them (POST /api/v1/devices/me/events with the device
token, the image as a multipart file part), and JPEGs of a known size made with Pillow."""

from __future__ import annotations

import io
import time
from typing import Any

import httpx
import orjson
from PIL import Image, ImageDraw

NOW_MS = int(time.time() * 1000) - 3_600_000  # an hour ago: well inside every window


def plate_read(
    plate: str,
    *,
    ts: int = NOW_MS,
    camera: str = "gate-1",
    confidence: float = 0.93,
    bbox: list[int] | None = None,
    region: str | None = "กรุงเทพมหานคร",
    image: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """A plate_read event as the device API takes it."""
    data: dict[str, Any] = {
        "plate": plate,
        "confidence": confidence,
        "direction": "in",
        "lane": 1,
        "vehicle_type": "car",
        "vehicle_color": "white",
        "camera": camera,
        **extra,
    }
    if region is not None:
        data["region"] = region
    if bbox is not None:
        data["bbox"] = bbox
    event: dict[str, Any] = {"type": "plate_read", "ts": ts, "data": data}
    if image:
        event["media"] = ["image"]
    return event


def jpeg(width: int = 640, height: int = 360, box: list[int] | None = None) -> bytes:
    """A JPEG of `width` x `height`, grey, with the plate's box painted white."""
    picture = Image.new("RGB", (width, height), (90, 96, 104))
    if box is not None:
        x, y, w, h = box
        ImageDraw.Draw(picture).rectangle((x, y, x + w, y + h), fill=(250, 250, 250))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=80)
    return out.getvalue()


async def send_reads(http: httpx.AsyncClient, token: str, events: list[dict[str, Any]]) -> None:
    """Plate reads without images, in one request."""
    answer = await http.post(
        "/api/v1/devices/me/events", headers={"X-Device-Token": token}, json=events
    )
    assert answer.status_code == 201, answer.text


async def send_read_with_image(
    http: httpx.AsyncClient, token: str, event: dict[str, Any], image: bytes
) -> None:
    """One plate read and its image, multipart: the event JSON and the file part `image`."""
    answer = await http.post(
        "/api/v1/devices/me/events",
        headers={"X-Device-Token": token},
        files={
            "event": (None, orjson.dumps(event), "application/json"),
            "image": ("read.jpg", image, "image/jpeg"),
        },
    )
    assert answer.status_code == 201, answer.text
