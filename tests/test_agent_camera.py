"""The agent's camera plug-in, its parts: frames, detector, triggers, spool, heat, settings.

Real components throughout: Pillow renders and decodes, the spool is the real SQLite queue
and files, temperatures come from a thermal file the test writes, the PIR is a sensor
plug-in registered through the plug-in API (the hardware is what is faked).
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from fleetcore_agent.camera.detect import PlateRead, SimulatedDetector, checked
from fleetcore_agent.camera.health import ThermalGovernor, cpu_temp_c, edge_health
from fleetcore_agent.camera.plugin import Camera
from fleetcore_agent.camera.render import PLATES, Vehicle, render
from fleetcore_agent.camera.sources import Frame, SimulatedCamera, create_source
from fleetcore_agent.camera.spool import Spool
from fleetcore_agent.camera.triggers import MotionTrigger
from fleetcore_agent.config import AgentConfig, ConfigError, load
from fleetcore_agent.sensors import SensorError, register
from fleetcore_agent.sensors.base import Value

BASE = "device_id: cam-1\ntoken: fcd_secret\nhttp_url: http://127.0.0.1:9\n"


def _config(tmp_path: Path, camera: str, *, extra: str = "") -> AgentConfig:
    path = tmp_path / "device.yaml"
    path.write_text(BASE + f"data_dir: {tmp_path / 'data'}\n" + extra + "camera:\n" + camera)
    return load(path, {})


def _small(**options: Any) -> dict[str, Any]:
    return {"width": 320, "height": 240, "frames_per_vehicle": 2, **options}


# Frames and reads ---------------------------------------------------------------------


def test_simulated_reads_have_decodable_jpegs_and_boxes_inside_the_image() -> None:
    camera = SimulatedCamera(_small(seed=7))
    detector = SimulatedDetector({"seed": 7})
    reads: list[tuple[Frame, PlateRead]] = []
    for _ in range(12):
        frame = camera.grab()
        reads += [(frame, read) for read in detector.detect(frame)]
    assert len(reads) == 6  # every other frame is the empty road
    known = {plate for plate, _ in PLATES}
    for frame, read in reads:
        image = Image.open(io.BytesIO(frame.jpeg))
        image.load()
        assert (image.format, image.size) == ("JPEG", (frame.width, frame.height))
        x, y, w, h = read.bbox
        assert x >= 0
        assert y >= 0
        assert w > 0
        assert h > 0
        assert x + w <= frame.width
        assert y + h <= frame.height
        assert read.plate in known
        assert 0 <= read.confidence <= 1
        assert read.direction in ("in", "out")
        assert read.lane in (1, 2)
        # The box is where the plate was drawn: mostly white inside.
        crop = image.convert("L").crop((x + 4, y + 4, x + w - 4, y + h - 4))
        histogram = crop.histogram()
        assert sum(histogram[200:]) > 0.5 * sum(histogram)


def test_the_same_seed_gives_the_same_reads() -> None:
    def run(seed: int) -> list[tuple[str, float, tuple[int, int, int, int]]]:
        camera, detector = SimulatedCamera(_small(seed=seed)), SimulatedDetector({"seed": seed})
        return [
            (r.plate, r.confidence, r.bbox)
            for _ in range(10)
            for r in detector.detect(camera.grab())
        ]

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_thai_and_latin_plates_render_without_a_thai_font() -> None:
    for plate, region in [("กข 1234", "กรุงเทพมหานคร"), ("AB-123-CD", "FR"), ("7ABC123", "")]:
        out = render(Vehicle(plate, region), width=320, height=240, font="/no/such/font.ttf")
        assert out.plate_bbox is not None
        assert Image.open(io.BytesIO(out.jpeg)).size == (320, 240)


def test_a_plate_list_from_the_options_is_used() -> None:
    camera = SimulatedCamera(_small(plates=[{"plate": "ZZ 9", "region": "Test"}]))
    detector = SimulatedDetector({})
    reads = [r for _ in range(4) for r in detector.detect(camera.grab())]
    assert {(r.plate, r.region) for r in reads} == {("ZZ 9", "Test")}


def test_reads_from_a_users_detector_are_checked() -> None:
    frame = Frame(b"", 100, 50, 0)
    read = checked({"plate": " AB1 ", "confidence": 0.5, "bbox": [90, -5, 40, 20]}, frame)
    assert (read.plate, read.bbox) == ("AB1", (90, 0, 10, 20))  # clipped into the frame
    for bad, named in [
        ({"plate": "", "confidence": 0.5, "bbox": [0, 0, 1, 1]}, "plate"),
        ({"plate": "A", "confidence": 1.5, "bbox": [0, 0, 1, 1]}, "confidence"),
        ({"plate": "A", "confidence": 0.5, "bbox": [0, 0]}, "bbox"),
        ({"plate": "A", "confidence": 0.5, "bbox": [0, 0, 1, 1], "direction": "up"}, "direction"),
        # The platform's limits: a read it would refuse for good is left out here.
        ({"plate": "A" * 49, "confidence": 0.5, "bbox": [0, 0, 1, 1]}, "plate"),
        ({"plate": "A", "confidence": 0.5, "bbox": [0, 0, 1, 1], "lane": 100}, "lane"),
        ({"plate": "A", "confidence": 0.5, "bbox": [0, 0, 1, 1], "lane": -1}, "lane"),
    ]:
        with pytest.raises(ValueError, match=named):
            checked(bad, frame)


class _Frozen:
    """A stand-in for a user's model: every frame holds plate ZZ 1 at a fixed place."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.confidence = float(options["confidence"])

    def detect(self, frame: Frame) -> list[dict[str, Any]]:
        return [
            {"plate": "ZZ 1", "confidence": self.confidence, "bbox": [1, 2, 30, 10]},
            {"plate": "bad", "confidence": "high", "bbox": [0, 0, 1, 1]},
        ]

    def close(self) -> None:
        return


def make_detector(options: Mapping[str, Any]) -> _Frozen:
    """Loaded by the tests below as tests.test_agent_camera:make_detector."""
    return _Frozen(options)


def test_a_detector_plugs_in_by_dotted_path(tmp_path: Path) -> None:
    config = _config(
        tmp_path,
        "  trigger: interval\n  min_gap_s: 0\n"
        "  detector: {type: 'tests.test_agent_camera:make_detector', "
        "options: {confidence: 0.9}}\n"
        "  source: {type: simulated, options: {width: 320, height: 240}}\n",
    )
    camera = Camera(config, {})
    try:
        assert camera.look() == 1  # the bad read is left out, not sent
        (queued,) = camera.spool.take(10)
        assert queued.event["data"]["plate"] == "ZZ 1"
        assert queued.event["data"]["bbox"] == [1, 2, 30, 10]
        assert queued.has_image
    finally:
        camera.spool.release()
        camera.stop()


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("tests.no_such_module:make", "cannot import"),
        ("tests.test_agent_camera:no_such_name", "has no"),
    ],
)
def test_a_detector_that_cannot_load_says_why(tmp_path: Path, kind: str, message: str) -> None:
    config = _config(tmp_path, f"  detector: {{type: '{kind}'}}\n")
    with pytest.raises(SensorError, match=message):
        Camera(config, {})


def test_real_sources_without_their_library_say_what_to_install() -> None:
    with pytest.raises(SensorError, match="python3-picamera2"):
        create_source("picamera2", {})
    try:
        import cv2  # noqa: F401
    except ImportError:
        with pytest.raises(SensorError, match=r"fleetcore-agent\[opencv\]"):
            create_source("opencv", {})


# Triggers -----------------------------------------------------------------------------


def test_motion_trigger_fires_when_a_vehicle_moves_not_on_a_still_road() -> None:
    camera = SimulatedCamera(_small(frames_per_vehicle=4))
    empty = camera.grab()  # frame 0: the road
    trigger = MotionTrigger({})
    assert trigger.check(lambda: empty) is None  # nothing to compare with yet
    assert trigger.check(lambda: empty) is None  # the same road again: no motion
    assert trigger.last_changed == 0
    moving = camera.grab()  # a vehicle appears
    assert trigger.check(lambda: moving) is moving
    assert trigger.last_changed > 0.01


_PIR_STATE = {"motion": False}


class _DoorPir:
    """A PIR plug-in whose hardware is this test's dictionary."""

    def __init__(self, name: str) -> None:
        self.name = name

    def read(self) -> dict[str, Value]:
        return {"motion": _PIR_STATE["motion"]}

    def close(self) -> None:
        return


@register("test_pir")
def _door_pir(name: str, options: Mapping[str, Any]) -> _DoorPir:
    return _DoorPir(name)


def test_pir_trigger_captures_only_while_the_sensor_sees_motion(tmp_path: Path) -> None:
    from fleetcore_agent.agent import Agent

    config = _config(
        tmp_path,
        "  trigger: {type: pir, options: {sensor: hall}}\n  min_gap_s: 0\n"
        "  source: {type: simulated, options: {width: 320, height: 240, frames_per_vehicle: 2}}\n",
        extra="mqtt_url: mqtt://127.0.0.1:9\nsensors: [{type: test_pir, name: hall}]\n",
    )
    agent = Agent(config)  # not started: the test drives the camera by hand
    camera = agent.camera
    assert camera is not None
    try:
        _PIR_STATE["motion"] = False
        assert [camera.look() for _ in range(3)] == [0, 0, 0]
        assert camera.captures == 0
        _PIR_STATE["motion"] = True
        assert sum(camera.look() for _ in range(4)) == 2  # empty road, vehicle, road, vehicle
        assert camera.captures == 4
    finally:
        _PIR_STATE["motion"] = False
        agent.stop()


# Spool --------------------------------------------------------------------------------


def _read(n: int) -> dict[str, Any]:
    return {"type": "plate_read", "severity": "info", "ts": 1000 + n, "data": {"plate": f"P{n}"}}


def test_over_budget_the_oldest_images_go_first_and_reads_never(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", budget_bytes=2500, fsync="normal")
    for n in range(5):
        spool.add(_read(n), bytes([n]) * 1000)
    # 3 images do not fit in 2500 bytes: each add past the second dropped the oldest.
    assert spool.image_count() == 2
    assert spool.counters["images_dropped"] == 3
    queued = spool.take(100)
    spool.release()
    reads = [q for q in queued if q.event["type"] == "plate_read"]
    assert [q.event["data"]["plate"] for q in reads] == ["P0", "P1", "P2", "P3", "P4"]
    assert [spool.image(q) for q in reads] == [None, None, None, b"\x03" * 1000, b"\x04" * 1000]
    notices = [q.event for q in queued if q.event["type"] == "camera_images_dropped"]
    assert [n["data"]["count"] for n in notices] == [1, 1, 1]
    assert [n["data"]["total"] for n in notices] == [1, 2, 3]
    spool.release()
    spool.close()
    # The count survives a restart, and so do the reads and the images.
    again = Spool(tmp_path / "spool", budget_bytes=2500, fsync="normal")
    assert again.counters["images_dropped"] == 3
    assert again.backlog() == 8
    assert again.image_count() == 2
    again.close()


def test_an_image_alone_over_budget_is_dropped_and_its_read_kept(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", budget_bytes=100, fsync="off")
    spool.add(_read(1), b"x" * 101)
    assert (spool.image_count(), spool.counters["images_dropped"], spool.backlog()) == (0, 1, 2)
    spool.close()


def test_a_sent_read_loses_its_file_and_leftovers_are_swept_at_start(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool", budget_bytes=10_000, fsync="normal")
    for n in range(3):
        spool.add(_read(n), b"jpeg" * 10)
    first, second, _ = spool.take(3)
    spool.release()
    spool.done(first)
    assert spool.image_count() == 2
    assert len(list((tmp_path / "spool" / "images").glob("*.jpg"))) == 2
    # A crash between the platform's answer and the deletion: the entry is gone, the file not.
    spool.store.remove([second.entry.id])
    (tmp_path / "spool" / "images" / "000000000099.tmp").write_bytes(b"half")
    spool.close()
    again = Spool(tmp_path / "spool", budget_bytes=10_000, fsync="normal")
    assert sorted(p.name for p in (tmp_path / "spool" / "images").iterdir()) == ["000000000003.jpg"]
    assert again.image_count() == 1
    again.close()


# Heat ---------------------------------------------------------------------------------


def test_thermal_governor_has_hysteresis() -> None:
    governor = ThermalGovernor(hot_c=80, cool_c=70, action="slow", slow_factor=3)
    assert [governor.update(t) for t in (60, 79.9, 80, 85, 75, 70.1)] == [
        None,
        None,
        "throttled",
        None,
        None,
        None,
    ]
    assert (governor.factor, governor.paused) == (3, False)
    assert governor.update(70) == "resumed"
    assert governor.factor == 1
    assert governor.update(None) is None  # no thermometer: no guess


def test_hot_device_pauses_capture_and_reports_it(tmp_path: Path) -> None:
    thermal = tmp_path / "temp"
    thermal.write_text("45000\n")
    config = _config(
        tmp_path,
        "  trigger: interval\n  min_gap_s: 0\n  name: gate-1\n"
        "  source: {type: simulated, options: {width: 320, height: 240, frames_per_vehicle: 2}}\n"
        f"  thermal: {{path: {thermal}, hot_c: 80, cool_c: 70, action: pause}}\n",
    )
    camera = Camera(config, {})
    try:
        assert camera.check_thermal() is None
        camera.look()
        assert camera.captures == 1
        thermal.write_text("81500\n")
        assert camera.check_thermal() == "throttled"
        assert camera.look() == 0
        assert camera.captures == 1  # paused: no frame grabbed at all
        thermal.write_text("72000\n")
        assert camera.check_thermal() is None  # cooler but not cool enough
        thermal.write_text("69000\n")
        assert camera.check_thermal() == "resumed"
        camera.look()
        assert camera.captures == 2
        events = [q.event for q in camera.spool.take(100)]
        camera.spool.release()
        changes = [e for e in events if e["type"].startswith("camera_")]
        assert [e["type"] for e in changes] == ["camera_throttled", "camera_resumed"]
        assert changes[0]["data"] == {
            "camera": "gate-1",
            "temp_c": 81.5,
            "hot_c": 80.0,
            "cool_c": 70.0,
            "action": "pause",
        }
        assert camera.stats()["camera_throttled"] is False
    finally:
        camera.stop()


def test_edge_health_reads_the_thermal_file_and_vcgencmd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    thermal = tmp_path / "temp"
    thermal.write_text("51234\n")
    assert cpu_temp_c(str(thermal)) == pytest.approx(51.234)
    assert cpu_temp_c(str(tmp_path / "absent")) is None
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    values = edge_health(str(thermal), tmp_path)
    assert values["edge_cpu_temp_c"] == pytest.approx(51.23)
    assert 0 <= float(values["edge_memory_percent"]) <= 100
    assert 0 <= float(values["edge_disk_percent"]) <= 100
    assert "edge_throttled" not in values  # not a Raspberry Pi: absent, not an error
    # A Raspberry Pi's vcgencmd (this one is a script: the firmware is what is faked).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "vcgencmd"
    script.write_text("#!/bin/sh\necho throttled=0x50005\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    values = edge_health(str(thermal), tmp_path)
    assert values["edge_throttled"] == 0x50005
    assert values["edge_under_voltage"] is True
    assert values["edge_throttling"] is True
    assert values["edge_freq_capped"] is False


# Settings -----------------------------------------------------------------------------


def test_example_camera_section_is_valid(tmp_path: Path) -> None:
    example = resources.files("fleetcore_agent").joinpath("example.yaml").read_text("utf-8")
    head, _, block = example.partition("# camera:\n")
    lines = [line[2:] if line.startswith("# ") else line for line in block.splitlines()]
    path = tmp_path / "device.yaml"
    path.write_text(head + "camera:\n" + "\n".join(lines) + "\n")
    camera = load(path, {}).camera
    assert camera is not None
    assert (camera.name, camera.trigger.type, camera.source.options["seed"]) == (
        "gate-1",
        "motion",
        1,
    )
    assert (camera.hot_c, camera.cool_c, camera.hot_action) == (80, 70, "slow")


@pytest.mark.parametrize(
    ("camera", "named"),
    [
        ("  colour: red\n", "camera.colour"),
        ("  source: webcam\n", "camera.source.type"),
        ("  source: {type: simulated, pixels: 3}\n", "camera.source.pixels"),
        ("  trigger: {type: sound}\n", "camera.trigger.type"),
        ("  trigger: {type: pir, options: {sensor: nowhere}}\n", "camera.trigger.options.sensor"),
        ("  detector: {type: 'not a path'}\n", "camera.detector.type"),
        ("  detector: {type: simulated, options: [1]}\n", "camera.detector.options"),
        ("  interval_s: 0\n", "camera.interval_s"),
        ("  spool_budget_bytes: lots\n", "camera.spool_budget_bytes"),
        ("  spool_budget_bytes: 1.5\n", "camera.spool_budget_bytes"),
        ("  min_confidence: 2\n", "camera.min_confidence"),
        ("  name: ''\n", "camera.name"),
        ("  thermal: {hot_c: 60, cool_c: 65}\n", "camera.thermal.cool_c"),
        ("  thermal: {action: melt}\n", "camera.thermal.action"),
        ("  thermal: {hot: 60}\n", "camera.thermal.hot"),
        ("  thermal: 80\n", "camera.thermal"),
        ("  - 1\n", "camera"),
    ],
)
def test_a_bad_camera_setting_is_named(tmp_path: Path, camera: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(tmp_path, camera)
    assert str(caught.value).startswith(named), str(caught.value)


def test_camera_needs_http_url(tmp_path: Path) -> None:
    path = tmp_path / "device.yaml"
    path.write_text("device_id: d\ntoken: t\ncamera: {name: gate}\n")
    with pytest.raises(ConfigError, match=r"^camera: needs http_url"):
        load(path, {})


def test_bad_part_options_are_named_at_start(tmp_path: Path) -> None:
    config = _config(tmp_path, "  source: {type: simulated, options: {width: 5}}\n")
    with pytest.raises(SensorError, match=r"camera\.source\.options\.width"):
        Camera(config, {})
    config = _config(tmp_path, "  detector: {type: simulated, options: {miss_rate: 3}}\n")
    with pytest.raises(SensorError, match=r"camera\.detector\.options\.miss_rate"):
        Camera(config, {})


def test_runtime_setting_changes_keep_the_camera(tmp_path: Path) -> None:
    from fleetcore_agent.config import with_changes

    config = _config(tmp_path, "  name: gate-9\n")
    changed = with_changes(config, interval_s=2)
    assert changed.camera == config.camera
    assert json.dumps(changed.interval_s) == "2.0"


def test_reads_below_min_confidence_are_not_queued(tmp_path: Path) -> None:
    camera_settings = (
        "  trigger: interval\n  min_gap_s: 0\n  min_confidence: {}\n"
        "  source: {{type: simulated, options: {{width: 320, frames_per_vehicle: 2}}}}\n"
        "  detector: {{type: simulated, options: {{confidence_from: 0.5, confidence_to: 0.6}}}}\n"
    )
    counts = []
    for threshold in (0.7, 0.4):
        (tmp_path / str(threshold)).mkdir()
        camera = Camera(_config(tmp_path / str(threshold), camera_settings.format(threshold)), {})
        try:
            counts.append(sum(camera.look() for _ in range(6)))
        finally:
            camera.stop()
    assert counts == [0, 3]
