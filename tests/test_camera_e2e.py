"""Issue 19 end to end: the agent's simulated camera → the real platform → the plates pages.

A real `fleetcore serve` (SQLite, filesystem media store) and a real `fleetcore-agent` with
the camera plug-in (simulated source and detector, interval trigger) as processes. The
platform is stopped while the camera keeps reading and restarted: every read the agent
queued arrives exactly once, each with its image, a watchlisted plate raises one alert per
visit with links (not bytes) to the read and its image, and /plates shows the thumbnails.
"""

from __future__ import annotations

import io
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

from PIL import Image

from fleetcore.auth.deps import SESSION_COOKIE
from tests.support.agent_rig import AgentProcess, Platform, agent_config, running
from tests.support.http_clients import local_client
from tests.support.wait import wait_until

# The camera sees these two plates in turn; the watchlist holds the second, typed otherwise.
PLATES = [
    {"plate": "กข 1234", "region": "กรุงเทพมหานคร"},
    {"plate": "AB-123-CD", "region": "FR"},
]


def _camera_agent(tmp: Path, platform: Platform, device_id: str, token: str) -> AgentProcess:
    return agent_config(
        tmp,
        "camera-agent",
        device_id=device_id,
        token=token,
        mqtt_port=platform.mqtt_port,
        http_url=platform.base,
        sequence=False,
        interval_s=1.0,  # the agent's other sensors: one slow simulated one
        sensors=[{"type": "simulated", "name": "env", "options": {"keys": ["temperature"]}}],
        camera={
            "name": "gate-1",
            "source": {
                "type": "simulated",
                "options": {"seed": 5, "width": 640, "height": 360, "plates": PLATES},
            },
            "trigger": {"type": "interval"},
            "detector": {
                "type": "simulated",
                "options": {"seed": 5, "confidence_from": 0.9, "confidence_to": 0.99},
            },
            "interval_s": 0.15,
            "min_gap_s": 0.1,
        },
    )


def _queued(agent: AgentProcess) -> int:
    """Plate reads the agent's camera queued: its spool's `produced` counter."""
    path = agent.data_dir / "camera" / "reads.sqlite3"
    if not path.exists():
        return 0
    with closing(sqlite3.connect(path, timeout=30)) as db:
        row = db.execute("SELECT value FROM meta WHERE name = 'produced'").fetchone()
        return int(row[0]) if row else 0


def _backlog(agent: AgentProcess) -> int:
    with closing(sqlite3.connect(agent.data_dir / "camera" / "reads.sqlite3", timeout=30)) as db:
        return int(db.execute("SELECT count(*) FROM queue").fetchone()[0])


def _stored(platform: Platform) -> list[tuple[Any, ...]]:
    """(event id, media id, plate) of every stored read, from the platform's database."""
    with closing(sqlite3.connect(platform.data_dir / "fleetcore.db", timeout=30)) as db:
        return db.execute("SELECT event_id, media_id, plate FROM plate_reads").fetchall()


async def test_reads_with_images_flow_from_the_agents_camera_to_the_plates_pages(
    tmp_path: Path,
) -> None:
    platform = Platform(tmp_path / "platform")
    await platform.prepare()
    await platform.start()
    device_id, token = await platform.new_device()
    admin = await platform.admin_headers()
    async with local_client(base_url=platform.base, headers=admin, timeout=30) as http:
        made = await http.post("/api/v1/watchlists", json={"name": "Stolen", "min_confidence": 0.8})
        assert made.status_code == 201, made.text
        watchlist = made.json()
        added = await http.post(
            f"/api/v1/watchlists/{watchlist['id']}/entries", json={"plate": "ab 123 cd"}
        )
        assert added.status_code == 201, added.text

    agent = _camera_agent(tmp_path, platform, device_id, token)
    with running(platform, agent):
        agent.start()
        await wait_until(lambda: len(_stored(platform)) >= 3, within=60, every=0.1)

        # The platform goes away; the camera keeps reading into its spool.
        platform.stop()
        before = _queued(agent)
        await wait_until(lambda: _queued(agent) >= before + 4, within=60, every=0.1)
        await platform.start()
        await wait_until(lambda: _queued(agent) >= before + 8, within=60, every=0.1)

        # Stop capturing, let the upload finish: every queued read is on the platform once.
        agent.signal(15)
        agent.start("drain")
        await wait_until(lambda: _backlog(agent) == 0, within=60, every=0.1)
        stored = _stored(platform)
        queued = _queued(agent)
        assert queued >= 8
        assert len(stored) == queued
        assert len({event_id for event_id, _, _ in stored}) == queued
        assert all(media_id is not None for _, media_id, _ in stored)
        assert {plate for _, _, plate in stored} <= {p["plate"] for p in PLATES}

        async with local_client(base_url=platform.base, headers=admin, timeout=30) as http:
            page = (await http.get("/api/v1/plates", params={"q": "AB123CD"})).json()
            read = page["items"][0]
            assert read["plate_norm"] == "AB123CD"
            assert read["camera"] == "gate-1"
            assert read["watchlists"] == ["Stolen"]
            assert (read["image_width"], read["image_height"]) == (640, 360)
            x, y, w, h = read["bbox"]
            assert 0 <= x < x + w <= 640
            assert 0 <= y < y + h <= 360

            image = await http.get(f"/api/v1/media/{read['media_id']}")
            assert image.status_code == 200
            assert image.headers["content-type"] == "image/jpeg"
            assert Image.open(io.BytesIO(image.content)).size == (640, 360)
            thumb = await http.get(f"/api/v1/media/{read['media_id']}/thumbnail")
            assert thumb.status_code == 200
            assert max(Image.open(io.BytesIO(thumb.content)).size) <= 320
            # No credentials, no image.
            async with local_client(base_url=platform.base) as nobody:
                anonymous = await nobody.get(f"/api/v1/media/{read['media_id']}")
            assert anonymous.status_code == 401

            alerts = (await http.get("/api/v1/alerts", params={"limit": 100})).json()["items"]
            hits = [a for a in alerts if a["rule_id"] == watchlist["rule_id"]]
            assert hits, alerts
            details = hits[0]["details"]["values"]
            assert details["plate_norm"] == "AB123CD"
            assert details["read_url"].startswith("/plates/reads/")
            assert details["image_url"] == f"/api/v1/media/{details['media_id']}"

            # The page, as a signed-in browser gets it (the session cookie holds the token).
            token = admin["Authorization"].removeprefix("Bearer ")
            async with local_client(
                base_url=platform.base, cookies={SESSION_COOKIE: token}, timeout=30
            ) as browser:
                html = await browser.get("/plates", params={"q": "AB123CD"})
            assert html.status_code == 200
            assert f"/api/v1/media/{read['media_id']}/thumbnail" in html.text
