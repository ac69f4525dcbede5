"""The camera plug-in's uploads across a platform outage and agent restarts: every read
arrives once, with its image; over the image budget the oldest images are dropped, never
the reads; a read the platform refuses for good is dropped and counted.

The platform is a tiny real HTTP server speaking the device events contract
(POST /api/v1/devices/me/events, multipart: `event` JSON and `image` JPEG), which records
what it stored and parses the bodies with python-multipart. The agent is the real one:
`Agent` with its threads, on a data directory that outlives it.
"""

from __future__ import annotations

import io
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from PIL import Image
from python_multipart.multipart import MultipartParser, parse_options_header

from fleetcore_agent.agent import Agent
from fleetcore_agent.camera.spool import Spool
from fleetcore_agent.config import AgentConfig, load
from tests.support.wait import wait_until_sync

TOKEN = "fcd_camera-device-token"
PATH = "/api/v1/devices/me/events"


def until(predicate: Callable[[], bool], *, within: float = 20.0) -> None:
    """Poll until true; fail after `within` seconds."""
    wait_until_sync(predicate, within=within)


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[dict[str, str], bytes]]:
    """name -> (headers, bytes) of each part."""
    kind, params = parse_options_header(content_type)
    assert kind == b"multipart/form-data"
    parts: list[tuple[dict[str, str], bytearray]] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[str, str] = {}
    data = bytearray()

    def begin() -> None:
        headers.clear()
        data.clear()

    def header_end() -> None:
        headers[header["field"].decode().lower()] = header["value"].decode()
        header["field"].clear()
        header["value"].clear()

    def part_end() -> None:
        parts.append((dict(headers), bytearray(data)))

    parser = MultipartParser(
        params[b"boundary"],
        {
            "on_part_begin": begin,
            "on_part_data": lambda b, s, e: data.extend(b[s:e]),
            "on_header_field": lambda b, s, e: header["field"].extend(b[s:e]),
            "on_header_value": lambda b, s, e: header["value"].extend(b[s:e]),
            "on_header_end": header_end,
            "on_part_end": part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    out: dict[str, tuple[dict[str, str], bytes]] = {}
    for part_headers, part_data in parts:
        _, disposition = parse_options_header(part_headers["content-disposition"])
        name = disposition[b"name"].decode()
        assert name not in out, f"two parts named {name}"
        out[name] = (part_headers, bytes(part_data))
    return out


@dataclass
class Stored:
    """One event the platform stored, with its image when it had one."""

    event: dict[str, Any]
    image: bytes | None


class Platform(ThreadingHTTPServer):
    """The device events endpoint: `down` answers 503, `up` stores and answers 201,
    `refuse` answers 422 with the error envelope, `forgetful` stores a read and then drops the
    connection unanswered (the answer lost), and answers a read it has (by its read_id) with
    409 PLATE_READ_DUPLICATE, as the platform does."""

    def __init__(self, port: int = 0) -> None:
        self.mode = "up"
        self.stored: list[Stored] = []
        self.answers: list[int] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", port), _Handler)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def reads(self) -> list[Stored]:
        with self.lock:
            return [s for s in self.stored if s.event["type"] == "plate_read"]

    def count(self, status: int) -> int:
        with self.lock:
            return self.answers.count(status)


class _Handler(BaseHTTPRequestHandler):
    server: Platform

    def log_message(self, format: str, *args: object) -> None:
        return

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        with self.server.lock:
            self.server.answers.append(status)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path != PATH or self.headers.get("X-Device-Token") != TOKEN:
            self._answer(401, {"error": {"code": "unauthorized", "message": "bad token"}})
            return
        mode = self.server.mode
        if mode == "down":
            self._answer(503, {"error": {"code": "unavailable", "message": "down"}})
            return
        if mode == "refuse":
            self._answer(422, {"error": {"code": "invalid", "message": "refused"}})
            return
        parts = parse_multipart(self.headers["Content-Type"], body)
        event = json.loads(parts["event"][1])
        read_id = event.get("data", {}).get("read_id")
        if read_id is not None:
            with self.server.lock:
                known = any(s.event["data"].get("read_id") == read_id for s in self.server.stored)
            if known:
                error = {"code": "PLATE_READ_DUPLICATE", "message": "stored before"}
                self._answer(409, {"error": error})
                return
        assert parts["event"][0]["content-type"] == "application/json"
        image = None
        if "image" in parts:
            assert parts["image"][0]["content-type"] == "image/jpeg"
            assert event["media"] == ["image"]
            image = parts["image"][1]
        else:
            assert "media" not in event
        assert set(parts) <= {"event", "image"}
        with self.server.lock:
            self.server.stored.append(Stored(event, image))
        if mode == "forgetful":  # stored, but the answer never reaches the camera
            self.close_connection = True
            return
        media = [{"id": str(uuid.uuid4()), "part": "image"}] if image is not None else []
        self._answer(201, {"stored": 1, "media": media})


@contextmanager
def serving(platform: Platform) -> Iterator[Platform]:
    thread = threading.Thread(target=platform.serve_forever, daemon=True)
    thread.start()
    try:
        yield platform
    finally:
        platform.shutdown()
        platform.server_close()
        thread.join(timeout=5)


def _config(tmp_path: Path, http_url: str, camera: str = "") -> AgentConfig:
    path = tmp_path / "device.yaml"
    path.write_text(
        f"device_id: cam-1\ntoken: {TOKEN}\nhttp_url: {http_url}\n"
        f"mqtt_url: mqtt://127.0.0.1:9\ndata_dir: {tmp_path / 'data'}\nfsync: normal\n"
        "interval_s: 0.2\nbackoff_min_s: 0.02\nbackoff_max_s: 0.1\n"
        "breaker_failures: 3\nbreaker_reset_s: 0.05\n"
        "camera:\n  name: gate-1\n  trigger: interval\n  interval_s: 0.02\n  min_gap_s: 0\n"
        "  source: {type: simulated, options: {width: 320, height: 240, "
        "frames_per_vehicle: 2, seed: 5}}\n"
        "  detector: {type: simulated, options: {seed: 5}}\n"
        + camera
        # This machine's own heat must not throttle the tests that are not about it.
        + ("" if "thermal:" in camera else f"  thermal: {{path: {tmp_path / 'no-thermal'}}}\n")
    )
    return load(path, {})


def _closed_port() -> int:
    probe = Platform()
    port = int(probe.server_address[1])
    probe.server_close()
    return port


def _camera_backlog(agent: Agent) -> int:
    assert agent.camera is not None
    return agent.camera.spool.backlog()


def _spooled(tmp_path: Path) -> dict[int, tuple[dict[str, Any], bytes | None]]:
    """What the spool holds: capture ts -> (read data, image bytes)."""
    spool = Spool(tmp_path / "data" / "camera", budget_bytes=10**12, fsync="normal")
    try:
        queued = spool.take(10_000)
        out = {
            q.event["ts"]: (q.event["data"], spool.image(q))
            for q in queued
            if q.event["type"] == "plate_read"
        }
        spool.release()
        return out
    finally:
        spool.close()


def test_every_read_arrives_once_with_its_image_across_outage_and_restarts(
    tmp_path: Path,
) -> None:
    port = _closed_port()
    # 1. The platform is unreachable: the agent captures and spools.
    first = Agent(_config(tmp_path, f"http://127.0.0.1:{port}"))
    first.start()
    try:
        camera = first.camera
        assert camera is not None
        until(lambda: camera.reads >= 6)
    finally:
        first.stop()
    spooled = _spooled(tmp_path)
    assert len(spooled) >= 6
    assert all(image is not None for _, image in spooled.values())

    with serving(Platform(port)) as platform:
        # 2. The platform answers 503: a new agent on the same directory keeps everything.
        platform.mode = "down"
        second = Agent(_config(tmp_path, platform.base))
        second.start(sample=False)  # upload only: no new reads, so the set is known
        try:
            until(lambda: platform.count(503) >= 3)
            assert platform.reads() == []
        finally:
            second.stop()
        # 3. Back up, with one more restart mid-way.
        platform.mode = "up"
        third = Agent(_config(tmp_path, platform.base, "  upload_batch: 1\n"))
        third.start(sample=False)
        try:
            until(lambda: len(platform.reads()) >= 2)
        finally:
            third.stop()
        fourth = Agent(_config(tmp_path, platform.base))
        fourth.start(sample=False)
        try:
            until(lambda: _camera_backlog(fourth) == 0)
        finally:
            fourth.stop()

    received = platform.reads()
    by_ts = {s.event["ts"]: s for s in received}
    assert len(by_ts) == len(received), "a read arrived twice"
    assert set(by_ts) == set(spooled)
    for ts, (data, image) in spooled.items():
        got = by_ts[ts]
        assert got.event["data"] == data
        assert got.event["data"]["camera"] == "gate-1"
        assert got.event["severity"] == "info"
        assert got.image == image
        assert got.image is not None
        decoded = Image.open(io.BytesIO(got.image))
        x, y, w, h = data["bbox"]
        assert x + w <= decoded.width
        assert y + h <= decoded.height
    assert list((tmp_path / "data" / "camera" / "images").glob("*.jpg")) == []


def test_over_the_image_budget_reads_still_arrive_without_their_image(tmp_path: Path) -> None:
    port = _closed_port()
    # Room for about two images: the oldest go, their reads stay.
    first = Agent(_config(tmp_path, f"http://127.0.0.1:{port}", "  spool_budget_bytes: 12000\n"))
    first.start()
    try:
        camera = first.camera
        assert camera is not None
        until(lambda: camera.reads >= 6)
    finally:
        first.stop()
    spooled = _spooled(tmp_path)
    with_image = {ts for ts, (_, image) in spooled.items() if image is not None}
    assert 1 <= len(with_image) <= 3
    assert max(with_image) == max(spooled)  # the newest kept theirs
    assert min(spooled) not in with_image  # the oldest lost theirs

    with serving(Platform(port)) as platform:
        second = Agent(_config(tmp_path, platform.base, "  spool_budget_bytes: 12000\n"))
        second.start(sample=False)
        try:
            until(lambda: _camera_backlog(second) == 0)
            stats = second.camera.stats() if second.camera else {}
        finally:
            second.stop()
    received = {s.event["ts"]: s for s in platform.reads()}
    assert set(received) == set(spooled)
    assert {ts for ts, s in received.items() if s.image is not None} == with_image
    dropped_total = stats["camera_images_dropped"]
    assert dropped_total == len(spooled) - len(with_image)
    with platform.lock:
        notices = [s.event for s in platform.stored if s.event["type"] == "camera_images_dropped"]
    assert sum(n["data"]["count"] for n in notices) == dropped_total
    assert all(n["severity"] == "warning" for n in notices)


def test_a_read_refused_for_good_is_dropped_and_counted(tmp_path: Path) -> None:
    with serving(Platform()) as platform:
        platform.mode = "refuse"
        agent = Agent(_config(tmp_path, platform.base))
        agent.start()
        camera = agent.camera
        assert camera is not None
        try:
            until(lambda: camera.spool.counters["rejected"] >= 3)
        finally:
            agent.stop()
    assert platform.count(422) == camera.spool.counters["rejected"]
    assert platform.stored == []
    # Refused reads are not retried: a new agent has nothing of them left to send.
    again = Spool(tmp_path / "data" / "camera", budget_bytes=10**9, fsync="normal")
    try:
        assert again.counters["rejected"] == platform.count(422)
        left = [q.event["type"] for q in again.take(1000)]
        assert len(left) == camera.reads - platform.count(422)
    finally:
        again.release()
        again.close()


def test_a_read_whose_answer_was_lost_is_stored_once(tmp_path: Path) -> None:
    with serving(Platform()) as platform:
        platform.mode = "forgetful"
        agent = Agent(_config(tmp_path, platform.base))
        agent.start()
        camera = agent.camera
        assert camera is not None
        try:
            until(lambda: camera.duplicates >= 3)
        finally:
            agent.stop()
        platform.mode = "up"
        after = Agent(_config(tmp_path, platform.base))
        after.start(sample=False)  # no more captures: what is spooled goes, then nothing
        try:
            until(lambda: _camera_backlog(after) == 0)
        finally:
            after.stop()
    assert after.camera is not None
    reads = platform.reads()
    ids = [r.event["data"]["read_id"] for r in reads]
    assert len(ids) == len(set(ids))  # each read stored once, however often it was sent
    assert platform.count(409) == camera.duplicates + after.camera.duplicates
    assert camera.spool.counters["rejected"] == 0


def test_hot_device_throttles_capture_and_the_platform_hears_of_it(tmp_path: Path) -> None:
    thermal = tmp_path / "temp"
    thermal.write_text("50000\n")
    with serving(Platform()) as platform:
        config = _config(
            tmp_path,
            platform.base,
            f"  thermal: {{path: {thermal}, hot_c: 80, cool_c: 70, action: slow, "
            "slow_factor: 50, check_s: 0.02}\n",
        )
        agent = Agent(config)
        agent.start()
        camera = agent.camera
        assert camera is not None
        try:
            until(lambda: len(platform.reads()) >= 2)
            thermal.write_text("86000\n")
            until(lambda: camera.governor.hot)
            slowed_at = camera.captures
            until(lambda: _types(platform).count("camera_throttled") == 1)
            assert camera.captures <= slowed_at + 1  # 50 x 0.02 s between looks now
            thermal.write_text("65000\n")
            until(lambda: _types(platform).count("camera_resumed") == 1)
            resumed_at = camera.captures
            until(lambda: camera.captures >= resumed_at + 5)  # full speed again
            telemetry = agent.sensors[-1].read()
            assert telemetry["camera_throttled"] is False
            assert telemetry["edge_cpu_temp_c"] == 65.0
        finally:
            agent.stop()
    throttled = next(s.event for s in platform.stored if s.event["type"] == "camera_throttled")
    assert throttled["data"]["temp_c"] == 86.0
    assert throttled["data"]["action"] == "slow"
    assert "media" not in throttled


def _types(platform: Platform) -> list[str]:
    with platform.lock:
        return [s.event["type"] for s in platform.stored]


def test_uploads_wait_for_the_platform_without_spinning(tmp_path: Path) -> None:
    with serving(Platform()) as platform:
        platform.mode = "down"
        agent = Agent(_config(tmp_path, platform.base, "  interval_s: 0.2\n"))
        agent.start()
        try:
            started = time.monotonic()
            until(lambda: platform.count(503) >= 3)
            camera = agent.camera
            assert camera is not None
            until(lambda: camera.reads >= 3)
            # Backoff (0.02..0.1 s) and the breaker (3 failures, 0.05 s): never a busy loop.
            elapsed = time.monotonic() - started
            assert platform.count(503) < 50 * elapsed + 10
        finally:
            agent.stop()
