"""Exporting readings: streamed CSV and Parquet over HTTP, and `fleetcore export`."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pyarrow.parquet as pq
import pytest
from fastapi import FastAPI
from starlette.types import Message

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.query_schemas import ms_to_iso
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support import forkserver
from tests.support.env import FLEETCORE, fleetcore_env
from tests.support.tenants import Tenant
from tests.test_telemetry_queries import API, BASE, DAY, make_device, num, write


def mixed_readings() -> list[Reading]:
    """Every kind, with ties on ts between keys."""
    readings: list[Reading] = []
    for i in range(40):
        ts = BASE + i * 1500
        readings += [num("temp", ts, 20 + i / 4), Reading("door", ts, Kind.TEXT, f'o,{i}"x')]
        if i % 3 == 0:
            readings.append(Reading("ok", ts, Kind.BOOLEAN, i % 2 == 0))
        if i % 7 == 0:
            readings.append(Reading("gps", ts + 1, Kind.JSON, {"lat": i, "n": [1, None]}))
    return readings


def csv_text(kind: Kind, value: Any) -> str:
    """How the export writes a value (computed here, not by the code under test)."""
    if kind is Kind.NUMBER:
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if kind is Kind.BOOLEAN:
        return "true" if value else "false"
    return str(value)


def comparable(key: str, text: str | None) -> Any:
    """JSON parsed (PostgreSQL's jsonb keeps no key order), anything else as it is."""
    return json.loads(text) if key == "gps" and text is not None else text


async def test_csv_export_holds_exactly_the_stored_rows(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    readings = mixed_readings()
    await write(live_database, live_tenant, device_id, readings)
    response = await live_client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params={"start": BASE, "end": BASE + DAY},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    disposition = response.headers["content-disposition"]
    assert disposition.startswith("attachment; filename=")
    assert device_id in disposition
    assert disposition.endswith('.csv"')
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["ts", "ts_ms", "key", "value", "kind"]
    kind_names = {
        Kind.NUMBER: "number",
        Kind.TEXT: "string",
        Kind.BOOLEAN: "boolean",
        Kind.JSON: "json",
    }
    assert [row[4] for row in rows[1:]] == [
        kind_names[r.kind] for r in sorted(readings, key=lambda r: (r.ts, r.key))
    ]
    expected = [
        [
            ms_to_iso(r.ts),
            str(r.ts),
            r.key,
            r.value if r.kind is Kind.JSON else csv_text(r.kind, r.value),
        ]
        for r in sorted(readings, key=lambda r: (r.ts, r.key))
    ]
    assert [[*row[:3], comparable(row[2], row[3])] for row in rows[1:]] == expected
    assert rows[1][0] == ms_to_iso(BASE)
    assert rows[1][0].endswith("T00:00:00.000Z")
    only = await live_client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params={"start": BASE, "end": BASE + DAY, "keys": "ok"},
    )
    assert {row[2] for row in list(csv.reader(io.StringIO(only.text)))[1:]} == {"ok"}


async def asgi_get(
    app: FastAPI, path: str, params: dict[str, Any], headers: dict[str, str]
) -> list[Message]:
    """Call the app as an ASGI server would and keep every message it sends."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode(params).encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []
    requested = False
    done = asyncio.Event()

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await done.wait()  # the client stays connected until the response ends
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    await app(scope, receive, send)
    done.set()
    return sent


async def test_a_large_export_streams_in_pieces(
    live_app: FastAPI, live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    count = 15_000
    await write(
        live_database,
        live_tenant,
        device_id,
        [num(key, BASE + i * 1000, i) for i in range(count) for key in ("a", "b")],
    )
    sent = await asgi_get(
        live_app,
        f"{API}/devices/{device_id}/telemetry/export",
        {"start": BASE, "end": BASE + DAY},
        live_tenant.headers(Role.VIEWER),
    )
    assert sent[0]["type"] == "http.response.start"
    assert sent[0]["status"] == 200
    pieces = [m["body"] for m in sent[1:] if m.get("body")]
    body = b"".join(pieces)
    # The header, then one piece per chunk of 10,000 rows: never the whole range at once.
    assert len(pieces) == 4
    assert max(len(p) for p in pieces) < len(body) / 2
    lines = body.decode().splitlines()
    assert len(lines) == 1 + 2 * count
    assert lines[1].endswith(",a,0,number")
    assert lines[2].endswith(",b,0,number")
    last = BASE + (count - 1) * 1000
    assert lines[-1] == f"{ms_to_iso(last)},{last},b,{count - 1},number"
    ts = [int(line.split(",")[1]) for line in lines[1:]]
    assert ts == sorted(ts)


async def test_parquet_round_trip(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    readings = mixed_readings()
    await write(live_database, live_tenant, device_id, readings)
    response = await live_client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params={"start": BASE, "end": BASE + DAY, "format": "parquet"},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-disposition"].endswith('.parquet"')
    table = pq.read_table(io.BytesIO(response.content))
    assert table.column_names == [
        "ts", "ts_ms", "key", "kind", "number", "text", "boolean", "json",
    ]  # fmt: skip
    got = [
        (
            row["ts_ms"],
            row["key"],
            row["number"],
            row["text"],
            row["boolean"],
            comparable(row["key"], row["json"]),
        )
        for row in table.to_pylist()
    ]
    want = []
    for r in sorted(readings, key=lambda r: (r.ts, r.key)):
        cells: list[Any] = [None, None, None, None]
        cells[r.kind - 1] = r.value
        want.append((r.ts, r.key, *cells))
    assert got == want
    assert table.column("ts")[0].as_py().timestamp() * 1000 == BASE


async def test_parquet_without_pyarrow_names_the_extra(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    device_id = await make_device(live_client, live_tenant)
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if the extra were not installed
    response = await live_client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params={"format": "parquet"},
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "PARQUET_UNAVAILABLE"
    assert "fleetcore[parquet]" in error["message"]


def run_cli(database: Database, *args: str) -> subprocess.CompletedProcess[str]:
    """`fleetcore ARGS` as a user runs it, on the test's database."""
    env = fleetcore_env()
    env["FLEETCORE_DATABASE_URL"] = database.engine.url.render_as_string(hide_password=False)
    return forkserver.run(
        [FLEETCORE, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


async def test_cli_export_writes_the_same_file(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    tmp_path: Path,
) -> None:
    device_id = await make_device(live_client, live_tenant)
    await write(live_database, live_tenant, device_id, mixed_readings())
    window = {"start": ms_to_iso(BASE), "end": str(BASE + DAY)}
    over_http = await live_client.get(
        f"{API}/devices/{device_id}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params=window,
    )
    out = tmp_path / "export.csv"
    args = ["--device", device_id, "--start", window["start"], "--end", window["end"]]
    result = run_cli(live_database, "export", *args, "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == over_http.content
    assert f"{len(over_http.text.splitlines()) - 1} readings written" in result.stdout
    parquet = tmp_path / "export.parquet"
    result = run_cli(live_database, "export", *args, "--out", str(parquet))
    assert result.returncode == 0, result.stderr
    assert pq.read_table(parquet).num_rows == len(over_http.text.splitlines()) - 1
    missing = run_cli(
        live_database, "export", "--device", device_id[:-4] + "0000", "--out", str(out)
    )
    assert missing.returncode == 1
    assert "no device" in missing.stderr
    bad = run_cli(live_database, "export", *args[:2], "--start", "soon", "--out", str(out))
    assert bad.returncode == 1
    assert "start" in bad.stderr
