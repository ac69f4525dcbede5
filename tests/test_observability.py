"""deploy/: the Grafana dashboard reads only metrics Fleetcore serves, its queries run on a
real Prometheus, and deploy/prometheus/prometheus.yml scrapes /metrics with the token.

The end-to-end test runs `fleetcore serve` as a process (what Prometheus scrapes in
production declares only what that process imports), gives it a device on MQTT and a
WebSocket client, and points Debian's Prometheus at it with the shipped configuration.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import yaml
from prometheus_client.parser import text_string_to_metric_families
from websockets.asyncio.client import connect

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.support.devices import new_device
from tests.support.faults import ServerProcess
from tests.support.http_clients import local_client
from tests.support.paho_device import PahoDevice
from tests.support.prometheus import PROMTOOL, Prometheus, metric_names
from tests.support.tenants import make_tenant
from tests.support.wait import wait_until

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "fleetcore-dashboard.json"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
PROVISIONING = DEPLOY / "grafana" / "provisioning"
# Grafana's variables, as a query would see them with "All" chosen.
VARIABLES = {"$__rate_interval": "1m", "$job": ".*", "$instance": ".*"}

# What issue 18 asks the dashboard to cover: a panel title, and a metric its queries read.
AREAS = {
    "Ingest rate": "fleetcore_telemetry_readings_accepted_total",
    "Commit latency": "fleetcore_telemetry_write_seconds_bucket",
    "Pipeline depth": "fleetcore_telemetry_queue_depth",
    "Dead letters by reason": "fleetcore_dead_letters_total",
    "Broker connections": "fleetcore_mqtt_connections",
    "WebSocket clients": "fleetcore_live_websocket_clients",
    "WebSocket lag": "fleetcore_live_buffered_messages",
    "Live messages": "fleetcore_live_messages_skipped_total",
    "Rule evaluation time per batch": "fleetcore_rules_batch_seconds_bucket",
    "Notification outcomes": "fleetcore_notification_attempts_total",
}


def dashboard() -> dict[str, Any]:
    """The dashboard JSON."""
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(container: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside rows (collapsed or not) included."""
    for panel in container.get("panels", []):
        yield panel
        yield from panels(panel)


def expressions() -> list[str]:
    """Every PromQL expression: panel targets and query variables."""
    board = dashboard()
    found = [t["expr"] for p in panels(board) for t in p.get("targets", [])]
    for variable in board["templating"]["list"]:
        if variable["type"] == "query":
            found.append(variable["query"]["query"])
    return found


def names_in(expr: str) -> set[str]:
    """Metric names of a panel query, or of a variable's label_values(metric{...}, label)."""
    if expr.startswith("label_values("):
        expr = expr.removeprefix("label_values(").rsplit(",", 1)[0]
    return metric_names(expr)


def exposed_names(exposition: str) -> set[str]:
    """Every name a query may use for what /metrics declares (samples or not yet)."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("", "_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in text_string_to_metric_families(exposition):
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def sample(exposition: str, name: str, **labels: str) -> float | None:
    """The value of one sample of /metrics (None when absent)."""
    for family in text_string_to_metric_families(exposition):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return float(found.value)
    return None


def test_metric_names_are_read_out_of_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, route) (rate(x_bucket{job=~"$job"}[5m])))'
    ) == {"x_bucket"}
    assert metric_names('sum(rate(a_total{l="b"}[1m] offset 5m)) / on (i) b * 1e3') == {
        "a_total",
        "b",
    }
    assert metric_names('max(g{a="sum(h)"}) and bool c') == {"g", "c"}
    assert names_in('label_values(fleetcore_q{job=~"$job"}, instance)') == {"fleetcore_q"}


def test_the_dashboard_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] == "fleetcore-overview"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
        "datasource",
        "prometheus",
    )
    every = list(panels(board))
    ids = [p["id"] for p in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"]
            # every process is chosen by the variables; counters are read as rates
            assert '{job=~"$job",instance=~"$instance"' in target["expr"], target["expr"]
            for name in names_in(target["expr"]):
                if name.endswith(("_total", "_bucket", "_sum", "_count")):
                    assert f"rate({name}" in target["expr"], target["expr"]


def test_the_dashboard_covers_what_the_issue_lists() -> None:
    by_title = {p["title"]: p for p in panels(dashboard())}
    for title, metric in AREAS.items():
        assert title in by_title, title
        read = set().union(*(names_in(t["expr"]) for t in by_title[title]["targets"]))
        assert metric in read, (title, read)


def test_the_prometheus_config_scrapes_metrics_with_the_token_file() -> None:
    checked = subprocess.run(
        [PROMTOOL, "check", "config", "--syntax-only", str(PROMETHEUS_YML)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    config = yaml.safe_load(PROMETHEUS_YML.read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"fleetcore-api", "fleetcore-ingest", "fleetcore-worker"}
    for job in jobs.values():
        assert job["metrics_path"] == "/metrics"
        assert job["authorization"]["type"] == "Bearer"
        assert job["authorization"]["credentials_file"].startswith("/")
        assert job["static_configs"][0]["targets"]
    assert "FLEETCORE_METRICS_TOKEN" in PROMETHEUS_YML.read_text()  # documented where used


def test_grafana_provisioning_points_at_prometheus_and_the_dashboard() -> None:
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yaml").read_text())
    assert [s["type"] for s in sources["datasources"]] == ["prometheus"]
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "fleetcore.yaml").read_text())
    assert providers["providers"][0]["type"] == "file"
    assert providers["providers"][0]["options"]["path"]


def scrape_config_for(server: ServerProcess, token_file: Path) -> dict[str, Any]:
    """The shipped configuration with every job pointed at `server`, scraped every second."""
    config: dict[str, Any] = yaml.safe_load(PROMETHEUS_YML.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s")
    for job in config["scrape_configs"]:
        job["authorization"]["credentials_file"] = str(token_file)
        job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    return config


async def test_every_dashboard_metric_is_served_and_every_query_runs(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(32)
    server = ServerProcess(tmp_path / "fleetcore", metrics_token=token)
    await server.start()
    database = Database.from_url(server.database_url, pool_size=1)
    device = PahoDevice("observability-1")
    prometheus: Prometheus | None = None
    try:
        async with local_client(base_url=server.base, timeout=10) as http:
            org = await make_tenant(http, database)
            device_id, device_token = await new_device(http, org)
            ws_url = f"ws://127.0.0.1:{server.port}/api/v1/ws?token={org.tokens[Role.VIEWER]}"
            async with connect(ws_url) as ws:
                await ws.send(
                    orjson.dumps(
                        {"type": "subscribe", "channel": "telemetry", "device_id": device_id}
                    ).decode()
                )
                assert orjson.loads(await asyncio.wait_for(ws.recv(), 10))["type"] == "subscribed"
                assert (await device.connect(server.mqtt_port, username=device_token)).data[
                    "reason"
                ] == 0
                topic = f"devices/{device_id}/telemetry"
                assert await device.publish(topic, b'{"t": 21.5}') == 0
                assert (
                    await device.publish(topic, b"not json") == 0x99
                )  # payload format invalid: a dead letter
                live = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                assert live["values"] == {"t": 21.5}

                assert (await http.get("/metrics")).status_code == 401
                bearer = {"Authorization": f"Bearer {token}"}
                exposition = ""

                async def sent_counted() -> bool:
                    nonlocal exposition
                    scraped = await http.get("/metrics", headers=bearer)
                    assert scraped.status_code == 200
                    exposition = scraped.text
                    return sample(exposition, "fleetcore_live_messages_sent_total") == 1

                await wait_until(sent_counted)  # counted once the send has returned
                used = set().union(*(names_in(e) for e in expressions()))
                assert len(used) > 40
                assert not sorted(used - exposed_names(exposition))
                # the panels the issue lists have something to show
                assert sample(exposition, "fleetcore_mqtt_connections") == 1
                assert sample(exposition, "fleetcore_live_websocket_clients") == 1
                accepted = sample(
                    exposition, "fleetcore_telemetry_readings_accepted_total", transport="mqtt"
                )
                assert accepted == 1
                dead = sample(
                    exposition,
                    "fleetcore_dead_letters_total",
                    transport="mqtt",
                    reason="malformed_json",
                )
                assert dead == 1
                assert (sample(exposition, "fleetcore_telemetry_write_seconds_count") or 0) >= 1

                token_file = tmp_path / "metrics-token"
                token_file.write_text(token + "\n")
                config = tmp_path / "prometheus.yml"
                config.write_text(yaml.safe_dump(scrape_config_for(server, token_file)))
                checked = subprocess.run(
                    [PROMTOOL, "check", "config", str(config)], capture_output=True, text=True
                )
                assert checked.returncode == 0, checked.stdout + checked.stderr
                prometheus = Prometheus(config, tmp_path)
                await prometheus.start()
                clients = 'sum by (job) (fleetcore_live_websocket_clients{instance=~".+"})'

                async def every_job_scraped_a_client() -> bool:
                    assert prometheus is not None
                    result = await prometheus.query(clients)
                    return len(result) == 3 and all(r["value"][1] == "1" for r in result)

                await wait_until(every_job_scraped_a_client, within=30, every=0.2)
            targets = await prometheus.api("targets")
            assert {t["health"] for t in targets["activeTargets"]} == {"up"}
            for expr in expressions():
                for variable, value in VARIABLES.items():
                    expr = expr.replace(variable, value)
                if expr.startswith("label_values("):
                    metric = expr.removeprefix("label_values(").rsplit(",", 1)[0]
                    assert await prometheus.api("series", **{"match[]": metric})
                else:
                    await prometheus.query(expr)  # a PromQL error fails here
    finally:
        device.stop()
        if prometheus is not None:
            prometheus.stop()
        await server.stop()
        await database.close()
