"""What advisory analytics costs ingest: the embedded server (MQTT + SQLite) under the
mqtt_ingest load, once with analytics watching nothing and once watching every key the
devices send (all six detection methods on each, a wear estimate on one), alternating, in
one run. The issue's bound: at most 10% fewer readings per second.

The values are mqtt_ingest's steady ones, so the detectors run their whole path on every
reading and find nothing (the cost that is always paid). The engine judges after the commit
behind a bounded queue: a slower engine slows the PUBACKs, so the rate includes its cost.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from tests.support.postgres import PostgresServer

from bench import mqtt_ingest

ROUNDS = 3
TARGET_DROP = 0.10

WATCH_ALL = {
    "analytics": {
        "keys": {
            f"k{i}": ({"wear": {"threshold": 1000.0}} if i == 0 else {})
            for i in range(mqtt_ingest.KEYS)
        }
    }
}


def run() -> dict[str, Any]:
    """Alternate runs without and with analytics; compare the median rates."""
    server = PostgresServer()  # (embedded() takes one; these runs stay on SQLite)
    server.start()
    without: list[dict[str, Any]] = []
    watched: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(ROUNDS):
                without.append(
                    mqtt_ingest.embedded("sqlite", server, Path(tmp), label=f"-plain{round_}")
                )
                watched.append(
                    mqtt_ingest.embedded(
                        "sqlite",
                        server,
                        Path(tmp),
                        profile_extra=WATCH_ALL,
                        label=f"-analytics{round_}",
                    )
                )
    finally:
        server.stop()
    plain = statistics.median(f["readings_per_s"] for f in without)
    judged = statistics.median(f["readings_per_s"] for f in watched)
    drop = round(1 - judged / plain, 3) if plain else float("nan")
    return {
        "name": "analytics_ingest",
        "devices": mqtt_ingest.DEVICES,
        "readings_per_message": mqtt_ingest.KEYS,
        "watched_keys_per_device": mqtt_ingest.KEYS,
        "without_analytics": without,
        "with_analytics": watched,
        "median_readings_per_s_without_analytics": plain,
        "median_readings_per_s_with_analytics": judged,
        "drop": drop,
        "target": {"max_drop": TARGET_DROP, "met": drop <= TARGET_DROP},
        "all_acked_stored": all(f["all_acked_stored"] for f in without + watched),
    }
