"""`make bench`: run every benchmark, print the figures, write bench/report.json."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    analytics_eval,
    analytics_ingest,
    analytics_rul,
    archive,
    dashboard_render,
    dex,
    external_ingest,
    external_lane,
    fleet_simulation,
    http_overhead,
    live_latency,
    mqtt_clients,
    mqtt_ingest,
    ota_download,
    plan_check,
    plate_ingest,
    rules_ingest,
    soak,
    telemetry_compaction,
    telemetry_ingest,
    telemetry_longrange,
    telemetry_storage,
)
from fleetcore.logging import configure_logging

BENCHMARKS = {
    "http_health": http_overhead.run,
    "telemetry_ingest": telemetry_ingest.run,
    "telemetry_storage": telemetry_storage.run,
    "telemetry_compaction": telemetry_compaction.run,
    "telemetry_longrange": telemetry_longrange.run,
    "mqtt_ingest": mqtt_ingest.run,
    "mqtt_clients": mqtt_clients.run,
    "external_ingest": external_ingest.run,
    "external_lane": external_lane.run,
    "live_latency": live_latency.run,
    "rules_ingest": rules_ingest.run,
    "analytics_ingest": analytics_ingest.run,
    "dashboard_render": dashboard_render.run,
    "fleet_simulation": fleet_simulation.run,
    "dex": dex.run,
    "plate_ingest": plate_ingest.run,
    "analytics_rul": analytics_rul.run,
    "analytics_eval": analytics_eval.run,
    "archive": archive.run,
    "ota_download": ota_download.run,
    "plan_check": plan_check.run,
}


# Run only when named: `python -m bench soak [--duration SECONDS]` (30 minutes by default).
ON_REQUEST = {"soak": soak.run}


def main(argv: list[str]) -> None:
    """Run the named benchmarks (all but the ON_REQUEST ones by default)."""
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all but soak)")
    parser.add_argument(
        "--duration", type=float, help="soak: seconds to run (default 1800, BENCH_SOAK_SECONDS)"
    )
    args = parser.parse_args(argv)
    if args.duration is not None:
        os.environ["BENCH_SOAK_SECONDS"] = str(args.duration)
    available = {**BENCHMARKS, **ON_REQUEST}
    selected = args.names or list(BENCHMARKS)
    unknown = [name for name in selected if name not in available]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}; choose from {', '.join(available)}")
    configure_logging("warning", "console")  # the figures, not Fleetcore's own info lines
    results = []
    for name in selected:
        print(f"== {name}", flush=True)
        result = available[name]()
        print(json.dumps(result, indent=2), flush=True)
        results.append(result)
    path = Path(__file__).parent / "report.json"
    # A partial run replaces its own entries and keeps the others' last figures.
    kept = json.loads(path.read_text())["results"] if path.exists() else []
    ran = {r["name"] for r in results}
    report = {
        "when": datetime.now(UTC).isoformat(),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "results": [r for r in kept if r.get("name") not in ran] + results,
    }
    path.write_text(json.dumps(report, indent=2))
    print(f"report written to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
