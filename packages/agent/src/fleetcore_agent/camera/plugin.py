"""The camera plug-in: capture on a trigger, read plates, spool, upload; watch the heat.

Two threads: the capturer (trigger → frame → detector → spool, and the thermal governor)
and the uploader (spool → one multipart POST per event, oldest first). An upload that fails
for now (no answer, 429, 5xx, the breaker open) is retried after an exponential backoff with
jitter, in order; one the platform refuses for good is dropped from the queue, counted and
logged.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fleetcore_agent.camera.detect import Detector, checked, create_detector
from fleetcore_agent.camera.health import ThermalGovernor, cpu_temp_c, edge_health
from fleetcore_agent.camera.sources import CaptureSource, create_source
from fleetcore_agent.camera.spool import Queued, Spool
from fleetcore_agent.camera.triggers import Trigger, create_trigger
from fleetcore_agent.config import AgentConfig, CameraConfig
from fleetcore_agent.http import DeviceApi
from fleetcore_agent.resilience import Backoff, CircuitBreaker
from fleetcore_agent.sensors.base import Sensor, Value

log = logging.getLogger("fleetcore_agent.camera")

# 4xx answers that say "not now" or "not you" rather than "never this read": keep it.
# 401/403: a token being rotated; 404: a platform without the endpoint yet; 408/429: load.
RETRY_4XX = frozenset({401, 403, 404, 408, 425, 429})
# The platform's answer to a read it has already (its read_id): delivered, not refused.
DUPLICATE = "PLATE_READ_DUPLICATE"


def _now_ms() -> int:
    return int(time.time() * 1000)


class Camera:
    """One camera on the device."""

    def __init__(self, config: AgentConfig, sensors: Mapping[str, Sensor]) -> None:
        assert config.camera is not None
        self.config: CameraConfig = config.camera
        cfg = self.config
        self.source: CaptureSource = create_source(cfg.source.type, cfg.source.options)
        try:
            self.detector: Detector = create_detector(cfg.detector.type, cfg.detector.options)
            self.trigger: Trigger = create_trigger(cfg.trigger.type, cfg.trigger.options, sensors)
        except BaseException:
            self.source.close()
            raise
        self.spool_dir = cfg.spool_dir or config.data_dir / "camera"
        self.spool = Spool(self.spool_dir, budget_bytes=cfg.spool_budget_bytes, fsync=config.fsync)
        self.api = DeviceApi(
            config.http_url,
            config.token,
            CircuitBreaker(config.breaker_failures, config.breaker_reset_s),
        )
        self.backoff = Backoff(config.backoff_min_s, config.backoff_max_s)
        self.governor = ThermalGovernor(cfg.hot_c, cfg.cool_c, cfg.hot_action, cfg.slow_factor)
        self.stopping = threading.Event()
        self.fresh = threading.Event()
        self.captures = 0
        self.reads = 0
        self.sent = 0
        self.sent_without_image = 0
        self.duplicates = 0  # reads the platform had already (an answer lost, then resent)
        self._last_capture: float | None = None
        self._threads: list[threading.Thread] = []

    # Life cycle ---------------------------------------------------------------------

    def start(self, *, capture: bool = True) -> None:
        """Start uploading, and capturing unless told not to."""
        loops = [(self._upload_loop, "camera-upload")]
        if capture:
            loops.append((self._capture_loop, "camera-capture"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop both threads; what was not uploaded stays spooled."""
        self.stopping.set()
        self.fresh.set()
        for thread in self._threads:
            thread.join(timeout=15)
        self.source.close()
        self.detector.close()
        self.spool.close()

    # Capture ------------------------------------------------------------------------

    def check_thermal(self) -> str | None:
        """Read the temperature; queue camera_throttled / camera_resumed on a change."""
        temp = cpu_temp_c(self.config.thermal_path)
        change = self.governor.update(temp)
        if change is None:
            return None
        cfg = self.config
        severity = "warning" if change == "throttled" else "info"
        log.warning("camera %s at %.1f °C", change, temp or 0.0)
        event = {
            "type": f"camera_{change}",
            "severity": severity,
            "ts": _now_ms(),
            "data": {
                "camera": cfg.name,
                "temp_c": temp,
                "hot_c": cfg.hot_c,
                "cool_c": cfg.cool_c,
                "action": cfg.hot_action if change == "throttled" else "resume",
            },
        }
        self.spool.add(event)
        self.fresh.set()
        return change

    def look(self) -> int:
        """One look through the camera: the number of reads queued."""
        if self.governor.paused:
            return 0
        gap = self.config.min_gap_s * self.governor.factor
        now = time.monotonic()
        if self._last_capture is not None and now - self._last_capture < gap:
            return 0
        frame = self.trigger.check(self.source.grab)
        if frame is None:
            return 0
        self._last_capture = now
        self.captures += 1
        queued = 0
        for raw in list(self.detector.detect(frame))[: self.config.max_reads_per_frame]:
            try:
                read = checked(raw, frame)
            except ValueError as exc:
                log.warning("camera: the detector gave a bad read, left out: %s", exc)
                continue
            if read.confidence < self.config.min_confidence:
                continue
            # The read's own id, kept with it in the spool: sent again after a lost answer,
            # the platform knows it (409 PLATE_READ_DUPLICATE) instead of storing it twice.
            data = {**read.data(self.config.name), "read_id": uuid.uuid4().hex}
            event: dict[str, Any] = {
                "type": "plate_read",
                "severity": "info",
                "ts": frame.ts_ms,
                "data": data,
            }
            self.spool.add(event, frame.jpeg)
            queued += 1
        if queued:
            self.reads += queued
            self.fresh.set()
        return queued

    def _capture_loop(self) -> None:
        next_thermal = next_look = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now >= next_thermal:
                self.check_thermal()
                next_thermal = now + self.config.thermal_check_s
            if now >= next_look and not self.governor.paused:
                try:
                    self.look()
                except Exception:  # a camera hiccup must not end capture for good
                    log.exception("camera: capture failed")
                next_look = now + self.config.interval_s * self.governor.factor
            wake = next_thermal if self.governor.paused else min(next_thermal, next_look)
            self.stopping.wait(max(0.0, wake - time.monotonic()))

    # Upload -------------------------------------------------------------------------

    def send(self, queued: Queued) -> str:
        """Upload one event: `sent`, `refused` (dropped for good) or `retry`."""
        image = self.spool.image(queued) if queued.has_image else None
        event = dict(queued.event)
        if image is not None:
            event["media"] = ["image"]
        answer = self.api.send_event(event, image)
        error = answer.body.get("error") if isinstance(answer.body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        if answer.status == 409 and code == DUPLICATE:  # stored before; the answer was lost
            self.spool.done(queued)
            self.sent += 1
            self.duplicates += 1
            return "sent"
        if answer.ok:
            self.spool.done(queued)
            self.sent += 1
            if queued.has_image and image is None:
                self.sent_without_image += 1
            return "sent"
        status = answer.status
        if status is not None and 400 <= status < 500 and status not in RETRY_4XX:
            log.error(
                "camera: the platform refused a %s event for good (%d): %s",
                event.get("type"),
                status,
                error,
            )
            self.spool.done(queued, rejected=True)
            return "refused"
        return "retry"

    def upload_once(self) -> str:
        """Send queued events oldest first until one fails: `idle`, `sent` or `failed`."""
        batch = self.spool.take(self.config.upload_batch)
        if not batch:
            return "idle"
        try:
            for queued in batch:
                if self.stopping.is_set() or self.send(queued) == "retry":
                    return "failed"
            self.backoff.reset()
            return "sent"
        finally:
            self.spool.release()

    def _upload_loop(self) -> None:
        while not self.stopping.is_set():
            self.fresh.clear()
            try:
                outcome = self.upload_once()
            except Exception:  # a bug must not stop uploads for good
                log.exception("camera: upload failed")
                outcome = "failed"
            if outcome == "idle":
                self.fresh.wait(1.0)
            elif outcome == "failed":
                self.stopping.wait(self.backoff.next())

    # Telemetry ----------------------------------------------------------------------

    def stats(self) -> dict[str, Value]:
        """The camera's counters as telemetry keys."""
        return {
            "camera_captures": self.captures,
            "camera_reads": self.reads,
            "camera_sent": self.sent,
            "camera_duplicates": self.duplicates,
            "camera_backlog": self.spool.backlog(),
            "camera_spool_images": self.spool.image_count(),
            "camera_spool_bytes": self.spool.image_bytes(),
            "camera_images_dropped": self.spool.counters["images_dropped"],
            "camera_rejected": self.spool.counters["rejected"],
            "camera_throttled": self.governor.hot,
        }

    def health_sensor(self) -> HealthSensor:
        """A sensor the agent samples with the others: edge health and camera counters."""
        return HealthSensor(self)


class HealthSensor:
    """Edge health (temperature, throttling, memory, disk) plus the camera's counters."""

    def __init__(self, camera: Camera) -> None:
        self.name = f"camera_{camera.config.name}"
        self.camera = camera

    def read(self) -> dict[str, Value]:
        """One sample."""
        values = edge_health(self.camera.config.thermal_path, self.camera.spool_dir)
        values.update(self.camera.stats())
        return values

    def close(self) -> None:
        """The camera closes itself."""
