"""The simulated gate cameras: deterministic reads, real JPEGs, the box on the plate."""

from __future__ import annotations

import io
import itertools

import orjson
import pytest
from PIL import Image

from fleetcore.simulator.cameras import PLATES, CameraStream, render, wanted_plates


def test_same_seed_same_reads_and_images() -> None:
    first = [CameraStream("gate", seed=7).next(1_795_300_000_000 + i) for i in range(5)]
    again = [CameraStream("gate", seed=7).next(1_795_300_000_000 + i) for i in range(5)]
    assert [r.data for r in first] == [r.data for r in again]
    assert [r.jpeg for r in first] == [r.jpeg for r in again]
    other = [CameraStream("gate", seed=8).next(1_795_300_000_000 + i) for i in range(5)]
    assert [r.data for r in other] != [r.data for r in first]


def test_reads_are_decodable_jpegs_with_the_box_inside_the_frame() -> None:
    stream = CameraStream("gate", seed=3, width=640, height=360)
    for i in range(6):
        read = stream.next(1_795_300_000_000 + i)
        image = Image.open(io.BytesIO(read.jpeg))
        image.load()
        assert image.format == "JPEG"
        assert image.size == (640, 360)
        x, y, w, h = read.data["bbox"]
        assert w > 0
        assert h > 0
        assert x >= 0
        assert x + w <= 640
        assert y >= 0
        assert y + h <= 360
        assert 0.0 <= read.data["confidence"] <= 1.0
        assert read.data["direction"] in {"in", "out"}
        assert read.data["camera"] == "gate"


def test_the_plate_is_drawn_where_the_box_says() -> None:
    import random

    jpeg, (x, y, w, h) = render("AB-123-CD", None, rng=random.Random(1), noise=0.0)
    image = Image.open(io.BytesIO(jpeg)).convert("L")
    inside = image.crop((x + 2, y + 2, x + w - 2, y + h - 2))
    # The plate is a light panel with dark letters; the box is not just any part of the car.
    assert max(inside.get_flattened_data()) > 200
    assert min(inside.get_flattened_data()) < 80


def test_vehicles_in_view_are_read_again_and_wanted_plates_come_up() -> None:
    stream = CameraStream("gate", seed=11, wanted_share=0.5, width=320, height=180)
    plates = [stream.next(1_795_300_000_000 + i).data["plate"] for i in range(40)]
    repeats = sum(1 for a, b in itertools.pairwise(plates) if a == b)
    assert repeats > 0
    assert set(wanted_plates()) & set(plates)
    assert set(plates) <= {plate for plate, _ in PLATES}


@pytest.mark.parametrize("seed", [0, 1])
def test_the_multipart_request_carries_the_event_and_its_image(seed: int) -> None:
    read = CameraStream("gate", seed=seed, width=320, height=180).next(1_795_300_000_000)
    parts = read.multipart()
    event = orjson.loads(parts["event"][1])
    assert event["type"] == "plate_read"
    assert event["media"] == ["image"]
    assert event["ts"] == 1_795_300_000_000
    assert parts["image"][1] == read.jpeg
    assert parts["image"][2] == "image/jpeg"
