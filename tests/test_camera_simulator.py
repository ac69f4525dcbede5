"""The simulated gate cameras: deterministic reads, real JPEGs, the box on the plate, and
`fleetcore simulate --kind camera` against a running server."""

from __future__ import annotations

import asyncio
import io
import itertools
from pathlib import Path

import orjson
import pytest
from fastapi import FastAPI
from PIL import Image
from sqlalchemy import func, select

from fleetcore.auth import users
from fleetcore.auth.models import Organization
from fleetcore.auth.principal import Role
from fleetcore.auth.schemas import UserIn
from fleetcore.db import Database
from fleetcore.plates.models import PlateRead, WatchlistEntry
from fleetcore.simulator.cameras import PLATES, CameraStream, render, wanted_plates
from tests.support.env import live_command_env, simulate
from tests.support.serving import serving


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


async def test_the_command_sends_reads_with_images_and_makes_the_watchlist(
    live_app: FastAPI, live_database: Database, tmp_path: Path
) -> None:
    env = live_command_env(live_database.engine.url, tmp_path)
    async with serving(live_app) as address:
        args = ("--devices", "2", "--rate", "4", "--duration", "3", "--url", f"http://{address}")
        first = await asyncio.to_thread(simulate, "camera", *args, env=env)
        assert first.returncode == 0, first.stderr
        assert "2 cameras in organization 'demo' (2 created, 0 reused)" in first.stdout
        assert "no watchlist was made" in first.stdout  # the organization has no admin yet

        # With an admin, the second run makes the watchlist of the wanted plates.
        async with live_database.session(write=True) as session:
            org = await session.scalar(select(Organization).where(Organization.slug == "demo"))
            assert org is not None
            data = UserIn(
                email="camera-admin@example.com",
                password="camera admin password",
                role=Role.ADMIN,
                organization_id=org.id,
            )
            await users.create_user(session, None, data=data)
        second = await asyncio.to_thread(simulate, "camera", *args, env=env)
        assert second.returncode == 0, second.stderr
        assert "(0 created, 2 reused)" in second.stdout
        assert "Watchlist 'Wanted vehicles' holds" in second.stdout

    async with live_database.session() as session:
        reads = await session.scalar(select(func.count()).select_from(PlateRead))
        with_image = await session.scalar(
            select(func.count()).select_from(PlateRead).where(PlateRead.media_id.is_not(None))
        )
        entries = await session.scalar(select(func.count()).select_from(WatchlistEntry))
    assert reads
    assert reads >= 6  # 4 reads/s for 3 s, twice, give or take the start
    assert with_image == reads
    assert entries == len(wanted_plates())
