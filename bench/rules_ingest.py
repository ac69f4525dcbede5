"""Ingest with and without rules: the embedded server (MQTT + SQLite) under the mqtt_ingest
load, once with no rules and once with 1,000 enabled rules, alternating, in one run.

The rules are what a fleet has: per device, thresholds, ranges, rates of change,
combinations and a "no data" watch on the keys the devices send; the values stay normal, so
rules are evaluated on every reading and fire none (the cost that is always paid).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path
from typing import Any

from tests.support.postgres import PostgresServer

from bench import mqtt_ingest

RULES = 1_000
ROUNDS = 3
TARGET_DROP = 0.15  # at most 15% fewer readings per second with the rules


def fleet_rules(i: int, device_id: str) -> list[dict[str, Any]]:
    """Ten rules on device i (RULES / DEVICES), none of which fires on the bench's values."""
    per_device = RULES // mqtt_ingest.DEVICES
    shapes: list[dict[str, Any]] = [
        {"key": "k0", "op": ">", "value": 1000},
        {"type": "outside_range", "key": "k1", "min": -50, "max": 150},
        {"type": "rate_of_change", "key": "k2", "window_s": 300, "op": ">", "value": 50},
        {
            "type": "all",
            "conditions": [
                {"key": "k3", "op": ">", "value": 100},
                {"key": "k4", "op": "<", "value": -100},
            ],
        },
        {
            "type": "any",
            "conditions": [
                {"key": "k5", "op": ">=", "value": 500},
                {"type": "outside_range", "key": "k6", "min": -40, "max": 120},
            ],
        },
        {"key": "k7", "op": "<", "value": -273},
        {"type": "no_data", "minutes": 60},
        {"key": "k8", "op": "==", "value": 0},
        {"type": "rate_of_change", "key": "k9", "window_s": 60, "op": "<", "value": -20},
        {"key": "k9", "op": ">", "value": 90},
    ]
    return [
        {
            "name": f"d{i} r{r}",
            "device_id": device_id,
            "condition": shapes[r % len(shapes)],
            "duration_s": 60 if r % 3 == 0 else 0,
            "clear_condition": {"key": "k0", "op": "<", "value": 900} if r == 0 else None,
            "severity": ["critical", "major", "minor", "warning", "info"][r % 5],
        }
        for r in range(per_device)
    ]


def run() -> dict[str, Any]:
    """Alternate runs without and with the rules; compare the median rates."""
    server = PostgresServer()  # (embedded() takes one; these runs stay on SQLite)
    server.start()
    without: list[dict[str, Any]] = []
    with_rules: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for round_ in range(ROUNDS):
                without.append(
                    mqtt_ingest.embedded("sqlite", server, Path(tmp), label=f"-plain{round_}")
                )
                with_rules.append(
                    mqtt_ingest.embedded(
                        "sqlite", server, Path(tmp), rules=fleet_rules, label=f"-rules{round_}"
                    )
                )
    finally:
        server.stop()
    plain = statistics.median(f["readings_per_s"] for f in without)
    ruled = statistics.median(f["readings_per_s"] for f in with_rules)
    drop = round(1 - ruled / plain, 3) if plain else float("nan")
    return {
        "name": "rules_ingest",
        "rules": RULES,
        "devices": mqtt_ingest.DEVICES,
        "readings_per_message": mqtt_ingest.KEYS,
        "without_rules": without,
        "with_rules": with_rules,
        "median_readings_per_s_without_rules": plain,
        "median_readings_per_s_with_rules": ruled,
        "drop": drop,
        "target": {"max_drop": TARGET_DROP, "met": drop <= TARGET_DROP},
        "all_acked_stored": all(f["all_acked_stored"] for f in without + with_rules),
        "note": "embedded broker + SQLite, mqtt_ingest's load (QoS 1, committed = PUBACKs "
        "in the measured window); rules evaluated after each commit behind a bounded queue, "
        "so a slower engine slows the PUBACKs: the rate includes the rules' cost",
    }
