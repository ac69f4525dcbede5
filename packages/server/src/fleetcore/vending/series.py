"""An accounted audit as telemetry, so charts, rules and alerts work on sales.

Readings at the audit's read time on the machine's device: vend_units, vend_revenue,
vend_cash_revenue, vend_cashless_revenue (the interval's totals), vend_test and vend_free
(test and free vends, PA3/PA4 summed over the selections: written only when the audit has
per-selection records), sales.<slot> (units per selection), soldout.<slot> (1 or 0) and
soldout_slots (how many). A baseline audit (the machine's first) has no interval: it writes
the sold-out readings only.

They go through the ingest pipeline like any device's readings, after the audit's
transaction committed, and are built from what is stored (the audit's summary and its Sale
rows), so a repeated upload of the same file writes them again: a device that got no answer
(a write that failed after the audit committed) retries, and telemetry's (series, ts) key
makes the repeat harmless. The device profile's key rules do not apply: these readings are
the platform's, not the device's.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal

from fleetcore.telemetry.pipeline import IngestPipeline
from fleetcore.telemetry.writer import DeviceReadings
from fleetcore.vending.accounting import BASELINE
from fleetcore.vending.models import Audit, Sale
from fleetcore_protocol.telemetry import Kind, Reading

_NOT_KEY = re.compile(r"[^A-Za-z0-9_\-]")  # within the telemetry key grammar, and no dots


def slot_key(slot: str) -> str:
    """A selection code as a key segment: other characters become "_" (e.g. "A 1" -> "A_1")."""
    return _NOT_KEY.sub("_", slot.strip())[:64] or "_"


def _number(key: str, ts: int, value: int | Decimal) -> Reading:
    return Reading(key, ts, Kind.NUMBER, int(value) if isinstance(value, int) else float(value))


def readings_of(audit: Audit, sales: Sequence[Sale]) -> list[Reading]:
    """The readings of an accounted audit (empty for one not accounted)."""
    accounting = audit.summary.get("accounting")
    if not audit.accounted or not accounting:
        return []
    ts = int(audit.read_at.timestamp() * 1000)
    out: list[Reading] = []
    if accounting["basis"] != BASELINE:
        totals = accounting["totals"]
        out += [
            _number("vend_units", ts, int(totals["units"])),
            _number("vend_revenue", ts, Decimal(totals["revenue"])),
            _number("vend_cash_revenue", ts, Decimal(totals["cash_revenue"])),
            _number("vend_cashless_revenue", ts, Decimal(totals["cashless_revenue"])),
        ]
        if sales:
            out += [
                _number("vend_test", ts, sum(s.test_vends for s in sales)),
                _number("vend_free", ts, sum(s.free_vends for s in sales)),
            ]
        out += [_number(f"sales.{slot_key(s.slot)}", ts, s.units) for s in sales]
    if not accounting.get("late"):
        soldout = set(accounting.get("soldout", ()))
        slots = audit.summary.get("products", {})
        out += [_number(f"soldout.{slot_key(s)}", ts, int(s in soldout)) for s in sorted(slots)]
        out.append(_number("soldout_slots", ts, len(soldout)))
    return out


async def write_series(
    pipeline: IngestPipeline | None, audits: Sequence[tuple[Audit, Sequence[Sale]]]
) -> int:
    """Submit the audits' readings and wait until committed; returns how many were new.

    `pipeline` None (an app bound to a test transaction, where background writers stay
    out) writes nothing.
    """
    if pipeline is None:
        return 0
    stored = 0
    for audit, sales in audits:
        readings = readings_of(audit, sales)
        if readings:
            item = DeviceReadings(audit.device_id, audit.organization_id, readings, "dex")
            stored += (await pipeline.submit(item)).stored
    return stored
