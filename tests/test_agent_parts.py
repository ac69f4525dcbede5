"""The agent's pure parts: settings, the queue, backoff, breaker, pacer, sensors, commands."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from fleetcore_agent.commands import CommandError, Registry
from fleetcore_agent.config import AgentConfig, ConfigError, load, with_changes
from fleetcore_agent.resilience import Backoff, CircuitBreaker, Pacer
from fleetcore_agent.sensors import SensorError, create, kinds
from fleetcore_agent.store import ROW_OVERHEAD, Store, payload
from fleetcore_protocol.telemetry import decode_telemetry

MINIMAL = "device_id: dev-1\ntoken: fcd_secret\n"


def _load(tmp_path: Path, text: str, **env: str) -> AgentConfig:
    path = tmp_path / "device.yaml"
    path.write_text(text)
    return load(path, env)


# Settings ----------------------------------------------------------------------------


def test_example_config_is_valid_once_it_names_a_device(tmp_path: Path) -> None:
    from importlib import resources

    example = resources.files("fleetcore_agent").joinpath("example.yaml").read_text("utf-8")
    config = _load(tmp_path, example)
    assert [s.type for s in config.sensors] == ["simulated", "system"]
    assert config.fsync == "full"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("token: t\n", "device_id"),
        ("device_id: d\n", "token"),
        (MINIMAL + "interval_s: fast\n", "interval_s"),
        (MINIMAL + "interval_s: 0\n", "interval_s"),
        (MINIMAL + "batch_size: 2.5\n", "batch_size"),
        (MINIMAL + "fsync: sometimes\n", "fsync"),
        (MINIMAL + "mqtt_url: http://x\n", "mqtt_url"),
        (MINIMAL + "http_url: ftp://x\n", "http_url"),
        (MINIMAL + "colour: blue\n", "colour"),
        (MINIMAL + "sequence: yes please\n", "sequence"),
        (MINIMAL + "sensors: []\n", "sensors"),
        (MINIMAL + "sensors: [{type: simulated, name: a b}]\n", "sensors[0].name"),
        (MINIMAL + "sensors: [{type: simulated, pin: 4}]\n", "sensors[0].pin"),
        (MINIMAL + "backoff_min_s: 5\nbackoff_max_s: 1\n", "backoff_max_s"),
        ("device_id: a/b\ntoken: t\n", "device_id"),
        ("- just a list\n", "config"),
    ],
)
def test_a_bad_setting_is_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    assert str(caught.value).startswith(named), str(caught.value)


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = _load(
        tmp_path,
        MINIMAL + "mqtt_url: mqtt://file:1883\n",
        FLEETCORE_AGENT_TOKEN="fcd_env",
        FLEETCORE_AGENT_DEVICE_ID="dev-env",
        FLEETCORE_AGENT_MQTT_URL="mqtts://broker.example:8884",
        FLEETCORE_AGENT_HTTP_URL="https://api.example",
        FLEETCORE_AGENT_DATA_DIR=str(tmp_path / "q"),
    )
    assert (config.token, config.device_id) == ("fcd_env", "dev-env")
    assert (config.mqtt_host, config.mqtt_port, config.mqtt_tls) == ("broker.example", 8884, True)
    assert config.http_url == "https://api.example"
    assert config.data_dir == tmp_path / "q"


def test_environment_alone_is_enough(tmp_path: Path) -> None:
    config = load(None, {"FLEETCORE_AGENT_TOKEN": "t", "FLEETCORE_AGENT_DEVICE_ID": "d"})
    assert config.mqtt_port == 1883
    env = {"FLEETCORE_AGENT_TOKEN": "t", "FLEETCORE_AGENT_DEVICE_ID": "d"}
    with pytest.raises(ConfigError, match=r"^mqtt_url"):
        load(None, {**env, "FLEETCORE_AGENT_MQTT_URL": "nonsense"})


def test_runtime_changes_are_validated_like_the_file(tmp_path: Path) -> None:
    config = _load(tmp_path, MINIMAL)
    assert with_changes(config, interval_s=2).interval_s == 2
    with pytest.raises(ConfigError, match=r"^interval_s"):
        with_changes(config, interval_s=-1)


# The queue ---------------------------------------------------------------------------


def _store(tmp_path: Path, budget: int = 1_000_000, **kw: bool) -> Store:
    return Store(tmp_path / "q.sqlite3", fsync="full", budget_bytes=budget, **kw)


def test_queue_is_oldest_first_with_unique_ts_and_survives_reopening(tmp_path: Path) -> None:
    store = _store(tmp_path, sequence=True)
    entries = [store.append({"t": float(i)}, now_ms=1_800_000_000_000) for i in range(5)]
    assert [e.ts for e in entries] == [1_800_000_000_000 + i for i in range(5)]  # same ms twice
    store.close()
    store = _store(tmp_path, sequence=True)
    taken = store.take(3, fresh_share=0)
    assert [json.loads(e.body)["seq"] for e in taken] == [1, 2, 3]
    store.remove([e.id for e in taken])
    later = store.append({"t": 9.0}, now_ms=1)  # a clock that went back
    assert later.ts == entries[-1].ts + 1
    assert [json.loads(e.body)["seq"] for e in store.take(10)] == [4, 5, 6]
    assert store.stats().backlog == 3
    assert store.stats().produced == 6


def test_a_batch_keeps_room_for_fresh_readings(tmp_path: Path) -> None:
    store = _store(tmp_path)
    ids = [store.append({"n": i}, now_ms=1_800_000_000_000).id for i in range(100)]
    batch = [e.id for e in store.take(10, fresh_share=0.3)]
    assert batch == ids[:7] + ids[-3:]  # oldest first, and the three newest
    assert [e.id for e in store.take(200, fresh_share=0.3)] == ids  # no reading twice


def test_over_budget_the_oldest_are_dropped_counted_and_reported_once(tmp_path: Path) -> None:
    body_size = len('{"n":10}')
    store = _store(tmp_path, budget=10 * (body_size + ROW_OVERHEAD))
    for n in range(10, 40):
        store.append({"n": n}, now_ms=1_800_000_000_000)
    stats = store.stats()
    assert stats.backlog == 10
    assert stats.dropped == stats.dropped_unreported == 20
    assert [json.loads(e.body)["n"] for e in store.take(100)] == list(range(30, 40))
    store.mark_dropped_reported(20)
    store.close()
    reopened = _store(tmp_path, budget=10 * (body_size + ROW_OVERHEAD))
    assert (reopened.stats().dropped, reopened.stats().dropped_unreported) == (20, 0)


def test_payload_is_what_the_platform_decodes(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.append({"temperature": 21.5, "door": "open"}, now_ms=1_800_000_000_000)
    store.append({"temperature": 21.6}, now_ms=1_800_000_000_000)
    decoded = decode_telemetry(payload(store.take(10)), now_ms=1_800_000_000_000)
    assert not decoded.problems
    assert [(r.key, r.ts) for r in decoded.readings] == [
        ("temperature", 1_800_000_000_000),
        ("door", 1_800_000_000_000),
        ("temperature", 1_800_000_000_001),
    ]


# Backoff, breaker, pacer -------------------------------------------------------------


def test_backoff_grows_with_full_jitter_up_to_the_cap() -> None:
    top = Backoff(0.5, 8, rng=lambda: 1.0)
    assert [top.next() for _ in range(7)] == [0.5, 1, 2, 4, 8, 8, 8]
    bottom = Backoff(0.5, 8, rng=lambda: 0.0)
    assert {bottom.next() for _ in range(5)} == {0.5}
    top.reset()
    assert top.next() == 0.5
    delays = []
    for _ in range(20):
        spread = Backoff(1, 100)
        spread.attempt = 5
        delays.append(spread.next())
    assert all(1 <= d <= 32 for d in delays)
    assert len(set(delays)) > 10  # jitter: agents that lost the same broker spread out


def test_breaker_opens_after_failures_then_lets_one_trial_through() -> None:
    now = [0.0]
    breaker = CircuitBreaker(3, 10, clock=lambda: now[0])
    for _ in range(2):
        assert breaker.allow()
        breaker.failure()
    assert breaker.state == "closed"
    breaker.failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    now[0] = 10.0
    assert breaker.state == "half_open"
    assert breaker.allow()
    assert not breaker.allow()  # one trial at a time
    breaker.failure()
    assert breaker.state == "open"  # a failed trial opens again at once
    now[0] = 20.0
    assert breaker.allow()
    breaker.success()
    assert breaker.state == "closed"
    assert breaker.allow()


def test_pacer_holds_the_drain_to_its_rate() -> None:
    now = [0.0]
    pacer = Pacer(100, 50, clock=lambda: now[0])
    assert pacer.delay(50) == 0
    pacer.spend(50)
    assert pacer.delay(50) == pytest.approx(0.5)
    now[0] = 0.25
    assert pacer.delay(50) == pytest.approx(0.25)
    now[0] = 0.5
    assert pacer.delay(50) == 0


# Sensors and commands ----------------------------------------------------------------


def test_sensor_plugins_load_by_name_and_faults_show() -> None:
    assert {"simulated", "system", "dht22", "pir"} <= set(kinds())
    sensor = create("simulated", "m", {"seed": 1, "keys": ["temperature", "vibration"]})
    first = sensor.read()
    assert set(first) == {"temperature", "vibration"}
    assert 15 < float(first["temperature"]) < 27
    sensor.inject("temperature", "dropout")  # type: ignore[attr-defined]
    assert "temperature" not in sensor.read()
    sensor.inject("temperature", "stuck")  # type: ignore[attr-defined]
    stuck = sensor.read()["temperature"]
    assert all(sensor.read()["temperature"] == stuck for _ in range(3))
    sensor.inject("temperature", "spike")  # type: ignore[attr-defined]
    assert float(sensor.read()["temperature"]) > 100
    health = create("system", "h", {}).read()
    assert {"cpu_percent", "memory_percent", "disk_percent"} <= set(health)
    with pytest.raises(SensorError, match="unknown type"):
        create("thermocouple", "x", {})
    with pytest.raises(SensorError, match=r"sensors\.m\.options\.keys"):
        create("simulated", "m", {"keys": ["pressure"]})


def test_hardware_sensors_say_which_extra_they_need() -> None:
    with pytest.raises(SensorError, match=r"fleetcore-agent\[hardware\]"):
        create("dht22", "room", {})


def test_registry_answers_once_per_command_id() -> None:
    registry = Registry()
    counter = itertools.count(1)
    registry.register("count", lambda params: next(counter))

    def refuse(params: dict[str, object]) -> None:
        raise CommandError("not now")

    registry.register("refuse", refuse)
    assert registry.handle("c1", "count", {}) == {"status": "succeeded", "result": 1}
    assert registry.handle("c1", "count", {}) == {"status": "succeeded", "result": 1}
    assert registry.handle("c2", "count", None) == {"status": "succeeded", "result": 2}
    assert registry.handle("c3", "refuse", {}) == {"status": "failed", "error": "not now"}
    assert registry.handle("c4", "nope", {})["error"] == "unknown method 'nope'"
    assert registry.handle("c5", "count", [1])["status"] == "failed"


def test_the_batch_in_flight_is_not_dropped_by_the_budget(tmp_path: Path) -> None:
    body_size = len('{"n":10}')
    store = _store(tmp_path, budget=5 * (body_size + ROW_OVERHEAD))
    for n in range(10, 15):
        store.append({"n": n}, now_ms=1_800_000_000_000)
    in_flight = store.take(2, fresh_share=0)  # 10 and 11 are on their way
    store.append({"n": 15}, now_ms=1_800_000_000_000)
    left = [json.loads(e.body)["n"] for e in store.take(10, fresh_share=0)]
    assert left == [10, 11, 13, 14, 15]  # 12 went, not the batch in flight
    store.release()
    assert [e.id for e in in_flight] == [e.id for e in store.take(2, fresh_share=0)]
    store.release()
    store.append({"n": 16}, now_ms=1_800_000_000_000)
    assert [json.loads(e.body)["n"] for e in store.take(10, fresh_share=0)] == [11, 13, 14, 15, 16]
    assert store.stats().dropped == 2
