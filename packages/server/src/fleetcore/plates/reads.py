"""The plate_read event: its data checked (pure), and a read's fields as stored.

``data`` of a ``{"type": "plate_read"}`` event: ``plate`` (1-48 characters, required),
``confidence`` (0..1, required), and optionally ``region``, ``camera``, ``direction``
(in | out), ``lane`` (0..99), ``bbox`` ([x, y, w, h], non-negative integers, in the image's
pixels), ``vehicle_type``, ``vehicle_color`` and ``read_id`` (1-64 of letters, digits and
``_ . : -``: the camera's own id for the read; a read sent again with an id the device used
before is refused whole as a duplicate, 409 ``PLATE_READ_DUPLICATE``, so a camera whose
answer was lost can resend safely). Any other field refuses the event: a typo would
otherwise lose a value silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from fleetcore.errors import Invalid
from fleetcore.plates.normalize import normalize, province

PLATE_READ = "plate_read"
MAX_PLATE_TEXT = 48  # the plate, and its province when the reader puts it in the text
MAX_SHORT = {"region": 64, "camera": 64, "vehicle_type": 64, "vehicle_color": 64}
DIRECTIONS = ("in", "out")
MAX_LANE = 99
_READ_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")  # fullmatch
_FIELDS = frozenset({"plate", "confidence", "direction", "lane", "bbox", "read_id", *MAX_SHORT})


@dataclass(frozen=True, slots=True)
class ReadData:
    """A plate read's fields, checked, with the plate normalised."""

    plate: str
    plate_norm: str
    plate_key: str
    region: str | None
    confidence: float
    camera: str | None = None
    direction: str | None = None
    lane: int | None = None
    bbox: tuple[int, int, int, int] | None = None
    vehicle_type: str | None = None
    vehicle_color: str | None = None
    read_id: str | None = None


def _bad(message: str, index: int | None, field: str | None) -> Invalid:
    return Invalid(message, code="INVALID_PLATE_READ", details={"index": index, "field": field})


def _int(value: Any) -> bool:
    return type(value) is int  # parsed JSON: a bool is no lane number


def _short(data: dict[str, Any], field: str, index: int | None) -> str | None:
    value = data.get(field)
    if value is None:
        return None
    limit = MAX_SHORT[field]
    if not isinstance(value, str) or not (0 < len(value.strip()) <= limit):
        raise _bad(f"{field} must be a text of 1-{limit} characters", index, f"data.{field}")
    return value.strip()


def _region(given: str | None) -> str | None:
    return None if given is None else province(given) or given


def parse_read(data: dict[str, Any], index: int | None) -> ReadData:
    """The checked fields of a plate_read event's data; Invalid naming the field otherwise."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise _bad(
            f"unknown field {unknown[0][:64]!r}; a plate read has {', '.join(sorted(_FIELDS))}",
            index,
            f"data.{unknown[0][:64]}",
        )
    plate = data.get("plate")
    if not isinstance(plate, str) or not (0 < len(plate.strip()) <= MAX_PLATE_TEXT):
        raise _bad(f"plate is required: 1-{MAX_PLATE_TEXT} characters", index, "data.plate")
    normal = normalize(plate)
    if not normal.plate_norm:
        raise _bad("plate holds no letters or digits of a plate", index, "data.plate")
    confidence = data.get("confidence")
    if (
        isinstance(confidence, bool)
        or not isinstance(confidence, int | float)
        or not math.isfinite(confidence)
        or not 0 <= confidence <= 1
    ):
        raise _bad("confidence is required: a number from 0 to 1", index, "data.confidence")
    direction = data.get("direction")
    if direction is not None and direction not in DIRECTIONS:
        raise _bad("direction must be in or out", index, "data.direction")
    lane = data.get("lane")
    if lane is not None and not (_int(lane) and 0 <= lane <= MAX_LANE):
        raise _bad(f"lane must be an integer from 0 to {MAX_LANE}", index, "data.lane")
    bbox = data.get("bbox")
    if bbox is not None and not (
        isinstance(bbox, list) and len(bbox) == 4 and all(_int(v) and v >= 0 for v in bbox)
    ):
        raise _bad("bbox must be [x, y, w, h]: four non-negative integers", index, "data.bbox")
    read_id = data.get("read_id")
    if read_id is not None and not (isinstance(read_id, str) and _READ_ID.fullmatch(read_id)):
        raise _bad("read_id must be 1-64 letters, digits and _ . : -", index, "data.read_id")
    shorts = {field: _short(data, field, index) for field in MAX_SHORT}
    return ReadData(
        plate=plate.strip(),
        plate_norm=normal.plate_norm,
        plate_key=normal.plate_key,
        # A province named in Thai or English is stored by its Thai name, as plates print it.
        region=_region(shorts["region"]) or normal.region,
        confidence=float(confidence),
        camera=shorts["camera"],
        direction=direction,
        lane=lane,
        bbox=(bbox[0], bbox[1], bbox[2], bbox[3]) if bbox is not None else None,
        vehicle_type=shorts["vehicle_type"],
        vehicle_color=shorts["vehicle_color"],
        read_id=read_id,
    )
