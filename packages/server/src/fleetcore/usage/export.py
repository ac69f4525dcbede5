"""Usage as CSV for billing: one line per (period, kind, transport), cells safe for spreadsheets."""

from __future__ import annotations

import csv
import io

from fleetcore.csv_cells import escape_cell
from fleetcore.usage.service import Usage

COLUMNS = ("organization_id", "granularity", "period", "kind", "transport", "n")


def usage_csv(usage: Usage) -> str:
    """The whole answer as CSV text (RFC 4180 line ends): small, one organization's periods."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in usage.rows:
        writer.writerow(
            (
                str(usage.organization_id),
                usage.granularity,
                row.period.isoformat(),
                escape_cell(row.kind),
                escape_cell(row.transport),
                row.n,
            )
        )
    return out.getvalue()
