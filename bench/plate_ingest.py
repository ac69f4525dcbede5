"""Plate reads with ~200 KB camera images over HTTP into the filesystem media store.

1. The ceiling, in this process on the same disk: writing the same images as files the way
   the filesystem store does (a temporary file, then a rename), with and without fsync.
2. `fleetcore serve` on SQLite with the default filesystem store: CAMERAS cameras, each a
   keep-alive connection posting one plate read at a time as multipart (the event's JSON and
   its JPEG), as the agent's camera plug-in does; every answer comes after the image was
   checked (decoded, metadata stripped, thumbnail made), stored and the read committed.
   Reads/s, image MB/s and latency; afterwards every answered read must be in the database
   with its image in the store.

Images are rendered before the clock starts (simulator/cameras.py), a pool per camera.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
from tests.support.postgres import free_port

from bench.dex import new_devices
from bench.load import post_head, post_request, run_requests
from bench.telemetry_http import PASSWORD, ROOT, _cli, _env, organization_admin, serving
from fleetcore.simulator.cameras import CameraStream, PlateRead

CAMERAS = 8
POOL = 12  # images per camera, reused round robin
WARM_UP_S = 1.0
SECONDS = 8.0
CEILING_FILES = 200
EVENTS_PATH = "/api/v1/devices/me/events"
BOUNDARY = "fleetcorebench" + uuid.uuid4().hex


def multipart(read: PlateRead, ts_ms: int) -> bytes:
    """The read's request body: the event JSON part and the image part."""
    event = {**read.event(), "ts": ts_ms}
    return b"".join(
        (
            f"--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="event"\r\n',
            b"Content-Type: application/json\r\n\r\n",
            orjson.dumps(event),
            f"\r\n--{BOUNDARY}\r\n".encode(),
            b'Content-Disposition: form-data; name="image"; filename="read.jpg"\r\n',
            b"Content-Type: image/jpeg\r\n\r\n",
            read.jpeg,
            f"\r\n--{BOUNDARY}--\r\n".encode(),
        )
    )


def _write_rate(images: list[bytes], folder: Path, *, fsync: bool) -> dict[str, float]:
    folder.mkdir(parents=True, exist_ok=True)
    size = 0
    begin = time.perf_counter()
    for i in range(CEILING_FILES):
        data = images[i % len(images)]
        final = folder / f"{i:06d}.jpg"
        tmp = folder / f".{i:06d}.tmp"
        with tmp.open("wb") as out:
            out.write(data)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        tmp.replace(final)
        size += len(data)
    elapsed = time.perf_counter() - begin
    return {
        "files_per_s": round(CEILING_FILES / elapsed, 1),
        "mb_per_s": round(size / elapsed / 1e6, 1),
    }


def ceiling(images: list[bytes], tmp: Path) -> dict[str, Any]:
    """Plain file writes of the same images: the store's floor cost, no checks, no database."""
    return {
        "no_fsync": _write_rate(images, tmp / "ceiling-a", fsync=False),
        "fsync": _write_rate(images, tmp / "ceiling-b", fsync=True),
    }


async def _load(port: int, pools: list[list[PlateRead]]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
        admin = await organization_admin(http)
        devices = await new_devices(http, admin, "cam", CAMERAS)
    heads = [
        post_head(
            "127.0.0.1",
            EVENTS_PATH,
            {"X-Device-Token": token},
            content_type=f"multipart/form-data; boundary={BOUNDARY}",
        )
        for _, token in devices
    ]
    sent = [0] * CAMERAS
    image_bytes = [0]
    start_ms = int(time.time() * 1000) - 3_600_000

    def make(connection: int, _n: int) -> bytes:
        n = sent[connection]
        sent[connection] += 1
        read = pools[connection][n % POOL]
        image_bytes[0] += len(read.jpeg)
        # 20 s apart: every read is a new visit of its plate (no suppression shortcut).
        return post_request(heads[connection], multipart(read, start_ms + n * 20_000))

    warm = await run_requests("127.0.0.1", port, make, connections=CAMERAS, seconds=WARM_UP_S)
    before = sum(sent), image_bytes[0]
    result = await run_requests("127.0.0.1", port, make, connections=CAMERAS, seconds=SECONDS)
    mean_image = (image_bytes[0] - before[1]) / max(1, sum(sent) - before[0])
    return {
        "reads_per_s": round(result.rate, 1),
        "image_mb_per_s": round(result.rate * mean_image / 1e6, 1),
        "mean_image_kb": round(mean_image / 1000, 1),
        "p50_ms": round(result.p50_ms, 1),
        "p95_ms": round(result.p95_ms, 1),
        "p99_ms": round(result.p99_ms, 1),
        "non_2xx": sum(result.errors.values()) + sum(warm.errors.values()),
        "answered": warm.requests + result.requests,
    }


def _stored(data_dir: Path) -> tuple[int, int, int]:
    """(plate reads, media rows, files in the media store) after the run."""
    with sqlite3.connect(data_dir / "fleetcore.db") as db:
        reads = db.execute("SELECT count(*) FROM plate_reads").fetchone()[0]
        media = db.execute("SELECT count(*) FROM media").fetchone()[0]
    files = sum(1 for p in (data_dir / "media").rglob("*") if p.is_file())
    return reads, media, files


def run() -> dict[str, Any]:
    """The ceiling, then the platform, in a throwaway directory."""
    with tempfile.TemporaryDirectory() as tmp:
        return {"name": "plate_ingest", **measure(Path(tmp))}


def measure(tmp: Path) -> dict[str, Any]:
    """The ceiling, then the platform; both printed and reported."""
    pools = [
        [CameraStream(f"cam-{c}", seed=c, wanted_share=0.0).next(0) for _ in range(POOL)]
        for c in range(CAMERAS)
    ]
    images = [read.jpeg for pool in pools for read in pool]
    figures: dict[str, Any] = {"file_write_ceiling": ceiling(images, tmp)}
    data_dir = tmp / "plates-sqlite"
    env = _env(FLEETCORE_DATA_DIR=str(data_dir))
    _cli(env, "admin", "create-superuser", "--email", ROOT, "--password", PASSWORD)
    port = free_port()
    with serving(env, port, tmp / "serve-plates.log"):
        http_figures = asyncio.run(_load(port, pools))
    reads, media, files = _stored(data_dir)
    answered = http_figures.pop("answered")
    http_figures["all_answered_reads_stored"] = reads == answered and media == answered
    http_figures["files_in_store"] = files  # an image and its thumbnail each
    figures["http_sqlite_filesystem_store"] = http_figures
    ceiling_mb = figures["file_write_ceiling"]["fsync"]["mb_per_s"]
    figures["share_of_fsync_ceiling_mb_per_s"] = round(
        http_figures["image_mb_per_s"] / ceiling_mb, 3
    )
    figures["note"] = (
        f"{CAMERAS} cameras, one keep-alive connection each, one read of ~200 KB per request; "
        "one uvicorn worker sharing the 2 cores with the load generator"
    )
    return figures
