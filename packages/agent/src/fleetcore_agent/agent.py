"""The agent: sample sensors into the queue, forward the queue, answer the platform.

Threads: the sampler (sensors → store), the MQTT network loop (link.py), the inbound
worker (commands and desired configuration, so handlers never block the network loop),
the HTTP command poller (only while the fallback is active), and the sender (`run`).
With a `camera:` section, the camera plug-in adds its capturer and uploader (camera/).
The updater (update/) follows software assignments and the trial of a new version.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from typing import Any

from fleetcore_agent import __version__
from fleetcore_agent.camera.plugin import Camera
from fleetcore_agent.commands import Registry, builtins
from fleetcore_agent.config import AgentConfig, ConfigError, with_changes
from fleetcore_agent.http import DeviceApi
from fleetcore_agent.link import Link
from fleetcore_agent.resilience import CircuitBreaker, Pacer
from fleetcore_agent.sensors import Sensor, SensorError, create
from fleetcore_agent.sensors.simulated import SimulatedSensor
from fleetcore_agent.store import Entry, Store, payload
from fleetcore_agent.update.updater import Updater
from fleetcore_protocol.topics import Channel, TopicError, parse

log = logging.getLogger("fleetcore_agent")

# Settings the platform may change at run time (desired configuration, apply_config).
RUNTIME_SETTINGS = (
    "interval_s",
    "batch_size",
    "fresh_share",
    "max_readings_per_s",
    "health_interval_s",
    "http_fallback_after_s",
)


def now_ms() -> int:
    """Wall-clock epoch milliseconds."""
    return int(time.time() * 1000)


class Agent:
    """One device's agent."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.sensors: list[Sensor] = [create(s.type, s.name, s.options) for s in config.sensors]
        self.camera: Camera | None = None
        if config.camera is not None:
            self.camera = Camera(config, {s.name: s for s in self.sensors})
            self.sensors.append(self.camera.health_sensor())
        self.store = Store(
            config.data_dir / "queue.sqlite3",
            fsync=config.fsync,
            budget_bytes=int(config.disk_budget_mb * 1_000_000),
            sequence=config.sequence,
        )
        self.registry = Registry()
        builtins(self.registry, self, reboot_command=config.reboot_command)
        self.link = Link(config, on_message=self._inbound_put, on_connect=self._on_connect)
        self.api = (
            DeviceApi(
                config.http_url,
                config.token,
                CircuitBreaker(config.breaker_failures, config.breaker_reset_s),
            )
            if config.http_url
            else None
        )
        self.pacer = Pacer(config.max_readings_per_s, float(config.batch_size))
        self.stopping = threading.Event()
        self.fresh = threading.Event()
        self.last_send_ms = 0
        self.sent_over = {"mqtt": 0, "http": 0}
        self.rejected = 0
        self.desired_version = -1
        self._inbound: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._settings_lock = threading.Lock()
        self._report_lock = threading.Lock()
        self.restart_requested = False
        self.updater = Updater(config, report=self.report_attributes, restart=self.request_restart)

    # Life cycle ---------------------------------------------------------------------

    def start(self, *, sample: bool = True) -> None:
        """Start sampling and updating (unless told not to), connecting and answering."""
        loops = [(self._inbound_loop, "inbound"), (self._http_commands_loop, "http-commands")]
        if sample:
            loops.append((self._sample_loop, "sampler"))
        for target, name in loops:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self.link.start()
        if self.camera is not None:
            self.camera.start(capture=sample)
        if sample:  # `drain` only empties the queue: no update starts meanwhile
            self.updater.start()

    def stop(self) -> None:
        """Stop everything; the queue keeps what was not acknowledged."""
        self.stopping.set()
        self.fresh.set()
        self.updater.stop()
        if self.link.connected.is_set():
            with self._report_lock:  # drops since the last report are not left unsaid
                self._report_dropped()
        self.link.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.camera is not None:
            self.camera.stop()
        for sensor in self.sensors:
            sensor.close()
        self.store.close()

    def run(self) -> None:
        """Forward the queue until stopped (call `start` first)."""
        next_health = 0.0
        while not self.stopping.is_set():
            if time.monotonic() >= next_health:
                if self.link.connected.is_set():
                    self.report_health()
                elif self._fallback_active() and self.api is not None:
                    self.api.report_attributes(self.health())
                next_health = time.monotonic() + self.config.health_interval_s
            if not self.send_once():
                self.fresh.wait(0.2)
                self.fresh.clear()

    def drain(self, timeout_s: float) -> bool:
        """Forward the queues until they are empty (call `start(sample=False)` first)."""
        deadline = time.monotonic() + timeout_s
        while not self.stopping.is_set() and time.monotonic() < deadline:
            if self._backlog() == 0:
                return True
            if not self.send_once():
                self.fresh.wait(0.1)
        return self._backlog() == 0

    def _backlog(self) -> int:
        camera = self.camera.spool.backlog() if self.camera is not None else 0
        return self.store.stats().backlog + camera

    # Sampling -----------------------------------------------------------------------

    def sample(self) -> None:
        """Read every sensor once and queue the reading."""
        values: dict[str, Any] = {}
        for sensor in self.sensors:
            try:
                values.update(sensor.read())
            except Exception:  # one broken sensor must not stop the others
                log.exception("sensor %s failed", sensor.name)
        if values or self.config.sequence:
            self.store.append(values, now_ms=now_ms())
            self.fresh.set()

    def _sample_loop(self) -> None:
        next_at = time.monotonic()
        while not self.stopping.is_set():
            self.sample()
            next_at = max(next_at + self.config.interval_s, time.monotonic())
            self.stopping.wait(max(0.0, next_at - time.monotonic()))

    # Forwarding ---------------------------------------------------------------------

    def _fallback_active(self) -> bool:
        return (
            self.api is not None
            and not self.link.connected.is_set()
            and self.link.down_for() >= self.config.http_fallback_after_s
        )

    def send_once(self) -> bool:
        """Send one batch if there is one and a way; True when something was sent."""
        if not self.link.connected.is_set() and not self._fallback_active():
            return False
        wait = self.pacer.delay(self.config.batch_size)
        if wait > 0:
            self.stopping.wait(wait)
        batch = self.store.take(self.config.batch_size, fresh_share=self.config.fresh_share)
        if not batch:
            return False
        body = payload(batch)
        ids = [entry.id for entry in batch]
        try:
            return self._send(batch, body, ids)
        finally:
            self.store.release()

    def _send(self, batch: list[Entry], body: bytes, ids: list[int]) -> bool:
        if self.link.connected.is_set():
            ack = self.link.publish(self.link.topic(Channel.TELEMETRY), body)
            ok, refused, via = ack.ok, ack.refused, "mqtt"
            if not ok and not refused and ack.reason is not None:
                self.stopping.wait(1.0)  # e.g. 0x97 quota exceeded: give the platform a second
        elif self._fallback_active() and self.api is not None:
            answer = self.api.send_telemetry(body)
            ok, refused, via = answer.ok, answer.refused, "http"
        else:
            return False
        if ok or refused:
            self.store.remove(ids)
            self.pacer.spend(len(batch))
        if ok:
            self.last_send_ms = now_ms()
            self.sent_over[via] += len(batch)
            return True
        if refused:
            self.rejected += len(batch)
            log.error("platform refused a batch of %d readings for good", len(batch))
            return True
        return False

    # Health -------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """The agent's own state, reported as client attributes."""
        stats = self.store.stats()
        return {
            "agent_version": __version__,
            "agent_backlog": stats.backlog,
            "agent_backlog_bytes": stats.backlog_bytes,
            "agent_last_send_ts": self.last_send_ms,  # 0: nothing sent since start
            "agent_reconnects": self.link.reconnects,
            "agent_dropped": stats.dropped,
            "agent_rejected": self.rejected,
            "agent_transport": (
                "mqtt"
                if self.link.connected.is_set()
                else "http"
                if self._fallback_active()
                else "none"
            ),
        }

    def report_health(self) -> None:
        """Publish health; tell the platform once about readings dropped over budget."""
        with self._report_lock:  # the connect hook and the run loop both report
            body = json.dumps(self.health()).encode()
            self.link.publish(self.link.topic(Channel.ATTRIBUTES), body)
            self._report_dropped()

    def _report_dropped(self) -> None:
        stats = self.store.stats()
        if stats.dropped_unreported:
            event = {
                "type": "agent_readings_dropped",
                "severity": "warning",
                "data": {"count": stats.dropped_unreported, "total": stats.dropped},
            }
            ack = self.link.publish(self.link.topic(Channel.EVENTS), json.dumps(event).encode())
            if ack.ok:
                self.store.mark_dropped_reported(stats.dropped_unreported)

    def _on_connect(self) -> None:
        self.report_health()
        self.report_attributes(self.updater.attributes())
        self.fresh.set()

    def request_restart(self) -> None:
        """Stop, so that the command line restarts the agent (a new version is current)."""
        self.restart_requested = True
        self.stopping.set()
        self.fresh.set()

    # Commands and desired configuration ---------------------------------------------

    def _inbound_put(self, topic: str, body: bytes) -> None:
        self._inbound.put((topic, body))

    def _inbound_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                topic, body = self._inbound.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                self._inbound_one(topic, body)
            except Exception:
                log.exception("could not handle a message on %s", topic)

    def _inbound_one(self, topic: str, body: bytes) -> None:
        try:
            channel = parse(topic).channel
        except TopicError:
            return
        try:
            message = json.loads(body)
        except ValueError:
            log.warning("not JSON on %s", topic)
            return
        if not isinstance(message, dict):
            return
        if channel is Channel.COMMANDS:
            command_id = str(message.get("id", ""))
            answer = self.registry.handle(
                command_id, str(message.get("method", "")), message.get("params")
            )
            result_topic = self.link.topic(Channel.COMMAND_RESULT, command_id)
            self.link.publish(result_topic, json.dumps(answer).encode())
        elif channel is Channel.CONFIG:
            shared = message.get("shared") or {}
            self.apply_desired(shared, int(message.get("version") or 0))
            if isinstance(shared, dict):
                self.updater.desired(shared)

    def apply_desired(self, shared: dict[str, Any], version: int) -> dict[str, Any]:
        """Apply the settings of the desired state this agent knows; report them back."""
        known = {k: v for k, v in shared.items() if k in RUNTIME_SETTINGS}
        outcome = self.apply_settings(known, report=False)
        self.desired_version = version
        report: dict[str, Any] = {**outcome["applied"], "agent_config_version": version}
        report["agent_config_rejected"] = outcome["rejected"] or None
        self._report_attributes(report)
        return outcome

    def _report_attributes(self, values: dict[str, Any]) -> None:
        self.report_attributes(values)

    def report_attributes(self, values: dict[str, Any]) -> bool:
        """Report client attributes (MQTT, else HTTP); True once the platform has them."""
        body = json.dumps(values).encode()
        if self.link.connected.is_set():
            return self.link.publish(self.link.topic(Channel.ATTRIBUTES), body).ok
        if self.api is not None:
            return self.api.report_attributes(values).ok
        return False

    def apply_settings(self, values: dict[str, Any], *, report: bool = True) -> dict[str, Any]:
        """Apply runtime settings one by one; each bad one is named, the others applied."""
        applied: dict[str, Any] = {}
        rejected: dict[str, str] = {}
        with self._settings_lock:
            for key, value in values.items():
                if key not in RUNTIME_SETTINGS:
                    rejected[key] = "not a setting the agent can change at run time"
                    continue
                try:
                    self.config = with_changes(self.config, **{key: value})
                except ConfigError as exc:
                    rejected[key] = str(exc)
                    continue
                applied[key] = getattr(self.config, key)
            self.pacer.rate = self.config.max_readings_per_s
            self.pacer.burst = float(self.config.batch_size)
        if report and applied:
            self._report_attributes(dict(applied))
        return {"applied": applied, "rejected": rejected}

    def inject_fault(self, sensor: str, key: str, fault: str) -> None:
        """Make a simulated sensor's key misbehave (`none` heals it)."""
        for candidate in self.sensors:
            if candidate.name == sensor and isinstance(candidate, SimulatedSensor):
                try:
                    candidate.inject(key, fault)
                except SensorError as exc:
                    raise ValueError(str(exc)) from None
                return
        raise ValueError(f"no simulated sensor named {sensor!r}")

    # Commands over HTTP while MQTT is down --------------------------------------------

    def _http_commands_loop(self) -> None:
        while not self.stopping.is_set():
            if not self._fallback_active() or self.api is None:
                self.stopping.wait(0.5)
                continue
            commands = self.api.poll_commands(wait_s=10)
            if not commands:
                self.stopping.wait(0.5)  # a timeout, or the platform is away: do not spin
            for command in commands:
                command_id = str(command.get("id", ""))
                answer = self.registry.handle(
                    command_id, str(command.get("method", "")), command.get("params")
                )
                self.api.send_result(command_id, answer)
