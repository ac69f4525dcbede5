"""Importing historical readings from CSV: over HTTP through the live pipeline, and the CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from fleetcore.telemetry.query_schemas import ms_to_iso
from fleetcore_protocol.telemetry import Kind, Reading
from tests.support.tenants import Tenant, make_tenant
from tests.test_telemetry_export import run_cli
from tests.test_telemetry_queries import API, BASE, DAY, HOUR, get, make_device, walk, write

GOOD_CSV = f"""ts,key,value,kind
{ms_to_iso(BASE)},temp,21.5,
{BASE + 1000},temp,22,
{BASE + 2000},temp,23.25,number
{ms_to_iso(BASE + 3000).replace("Z", "+00:00")},temp,-1e3,
{BASE},door,open,
{BASE},code,007,string
{BASE},flag,TRUE,
{BASE},bit,1,boolean
{BASE},gps,"{{""lat"": 1.5, ""tags"": [""a""]}}",
{BASE},list,"[1, 2]",json
{BASE},text,"  spaced, with comma ",
"""
GOOD_VALUES = [
    (BASE, "bit", True),
    (BASE, "code", "007"),
    (BASE, "door", "open"),
    (BASE, "flag", True),
    (BASE, "gps", {"lat": 1.5, "tags": ["a"]}),
    (BASE, "list", [1, 2]),
    (BASE, "temp", 21.5),
    (BASE, "text", "  spaced, with comma "),
    (BASE + 1000, "temp", 22.0),
    (BASE + 2000, "temp", 23.25),
    (BASE + 3000, "temp", -1000.0),
]


async def upload(
    client: httpx.AsyncClient,
    tenant: Tenant,
    device_id: str,
    content: bytes,
    role: Role = Role.MANAGER,
) -> httpx.Response:
    """POST a CSV file to the import route."""
    return await client.post(
        f"{API}/devices/{device_id}/telemetry/import",
        headers=tenant.headers(role),
        files={"file": ("readings.csv", content, "text/csv")},
    )


async def test_import_stores_typed_readings_once_however_often_imported(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    first = await upload(live_client, live_tenant, device_id, GOOD_CSV.encode())
    assert first.status_code == 200, first.text
    rows = len(GOOD_VALUES)
    assert first.json() == {
        "rows": rows,
        "stored": rows,
        "duplicates": 0,
        "rejected": [],
        "rejected_count": 0,
    }
    window = {"start": BASE, "end": BASE + DAY}
    assert await walk(live_client, live_tenant, device_id, **window) == GOOD_VALUES
    again = await upload(live_client, live_tenant, device_id, GOOD_CSV.encode())
    assert again.json()["stored"] == 0
    assert again.json()["duplicates"] == rows
    assert await walk(live_client, live_tenant, device_id, **window) == GOOD_VALUES
    # Roll-ups and latest values were kept right by the pipeline.
    path = f"/devices/{device_id}/telemetry"
    counted = await get(
        live_client, live_tenant, path, keys="temp", interval="1h", agg="count", **window
    )
    assert counted["buckets"][0]["values"]["temp"] == 4
    latest = await get(live_client, live_tenant, f"{path}/latest")
    assert latest["values"]["temp"] == {"ts": BASE + 3000, "value": -1000.0}
    audit = await live_client.get(
        f"{API}/audit",
        headers=live_tenant.headers(Role.ADMIN),
        params={"action": "telemetry.import"},
    )
    events = audit.json()["items"]
    assert len(events) == 2
    assert {e["target_id"] for e in events} == {device_id}
    assert sorted(e["details"]["stored"] for e in events) == [0, rows]


async def test_bad_lines_are_named_and_good_ones_stored(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    future = int(time.time() * 1000) + HOUR
    lines = [
        "ts,key,value,kind",
        f"{BASE},good,1,",  # 2
        "yesterday,t,1,",  # 3
        f"{future},t,1,",  # 4
        f"{BASE},t,,",  # 5
        f"{BASE},t,1",  # 6
        f"{BASE},bad key,1,",  # 7
        f"{BASE},t,abc,number",  # 8
        f"{BASE},t,1,decimal",  # 9
        f"{BASE},t,yes,boolean",  # 10
        f"{BASE},t,5,json",  # 11
        f"{BASE},t,a\x00b,",  # 12
        f"{BASE},t,1e999,",  # 13
        f"{BASE},t,1,,extra",  # 14
        "",  # 15: blank lines are skipped
        f"{BASE + 1},good,2,",  # 16
        f'{BASE},t,"unterminated',  # 17
    ]
    response = await upload(live_client, live_tenant, device_id, "\n".join(lines).encode())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["rows"], body["stored"], body["duplicates"]) == (15, 2, 0)
    assert body["rejected_count"] == 13
    reasons = {r["line"]: r["message"] for r in body["rejected"]}
    assert sorted(reasons) == [3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 17]
    assert "ts" in reasons[3]
    assert "future" in reasons[4]
    assert "empty" in reasons[5]
    assert "fields" in reasons[6]
    assert "key" in reasons[7]
    assert "number" in reasons[8]
    assert "kind" in reasons[9]
    assert "boolean" in reasons[10]
    assert "JSON" in reasons[11]
    assert "NUL" in reasons[12]
    assert "range" in reasons[13]
    assert "CSV" in reasons[17]
    stored = await walk(live_client, live_tenant, device_id, start=BASE, end=BASE + DAY)
    assert stored == [(BASE, "good", 1.0), (BASE + 1, "good", 2.0)]


async def test_rejections_are_listed_up_to_100_and_counted(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    device_id = await make_device(live_client, live_tenant)
    content = "ts,key,value\n" + "".join(f"never,k,{i}\n" for i in range(250))
    body = (await upload(live_client, live_tenant, device_id, content.encode())).json()
    assert (body["rows"], body["stored"], body["rejected_count"]) == (250, 0, 250)
    assert [r["line"] for r in body["rejected"]] == list(range(2, 102))


async def test_profile_rules_apply_to_imports(
    live_client: httpx.AsyncClient, live_tenant: Tenant
) -> None:
    keys = [{"key": "t", "type": "number", "min": 0, "max": 100}]
    profile = await live_client.post(
        f"{API}/device-profiles",
        headers=live_tenant.headers(Role.MANAGER),
        json={"name": "bounded", "telemetry_keys": keys},
    )
    body = {"name": "s", "serial_number": "P-1", "profile_id": profile.json()["id"]}
    device = await live_client.post(
        f"{API}/devices", headers=live_tenant.headers(Role.MANAGER), json=body
    )
    device_id = device.json()["id"]
    content = f"ts,key,value\n{BASE},t,50\n{BASE + 1},t,500\n{BASE},x,1\n{BASE},t,hot\n"
    answer = (await upload(live_client, live_tenant, device_id, content.encode())).json()
    assert answer["stored"] == 1
    assert [r["line"] for r in answer["rejected"]] == [3, 4, 5]


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (b"ts,key,value\n" + "caf\u00e9".encode("latin-1") + b",1,2\n", "CSV_NOT_UTF8"),
        (b"ts,key,value\n\xff\xfe\x00garbage", "CSV_NOT_UTF8"),
        (b"", "INVALID_CSV_HEADER"),
        (b"1700000000000,t,1\n", "INVALID_CSV_HEADER"),
        (b"ts,key,value,colour\n", "INVALID_CSV_HEADER"),
        (b"ts,key,key,value\n", "INVALID_CSV_HEADER"),
    ],
)
async def test_unusable_files_are_refused_whole(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    content: bytes,
    code: str,
) -> None:
    device_id = await make_device(live_client, live_tenant)
    if code == "CSV_NOT_UTF8":  # a good line first: still nothing stored from a bad file
        good_first = f"ts,key,value\n{BASE},t,1\n".encode()
        response = await upload(live_client, live_tenant, device_id, good_first + content[13:])
        assert response.status_code == 422
        assert response.json()["error"]["code"] == code
        assert "UTF-8" in response.json()["error"]["message"]
    response = await upload(live_client, live_tenant, device_id, content)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert (await get(live_client, live_tenant, f"/devices/{device_id}/telemetry/latest"))[
        "values"
    ] == {}


async def test_upload_shape_and_size(live_client: httpx.AsyncClient, live_tenant: Tenant) -> None:
    device_id = await make_device(live_client, live_tenant)
    path = f"{API}/devices/{device_id}/telemetry/import"
    headers = live_tenant.headers(Role.MANAGER)
    no_file = await live_client.post(path, headers=headers, data={"other": "x"})
    assert no_file.status_code == 422
    assert no_file.json()["error"]["code"] == "FILE_REQUIRED"
    huge = b"ts,key,value\n" + b"x" * (50 * 1024 * 1024)
    too_large = await upload(live_client, live_tenant, device_id, huge)
    assert too_large.status_code == 413
    assert too_large.json()["error"]["code"] == "FILE_TOO_LARGE"


async def test_viewer_reads_but_may_not_import_and_others_get_404(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    device_id = await make_device(live_client, live_tenant)
    content = GOOD_CSV.encode()
    for role in (Role.VIEWER, Role.OPERATOR):
        refused = await upload(live_client, live_tenant, device_id, content, role)
        assert refused.status_code == 403
        assert refused.json()["error"]["code"] == "PERMISSION_DENIED"
    other = await make_tenant(live_client, live_database)
    hidden = await upload(live_client, other, device_id, content, Role.ADMIN)
    assert hidden.status_code == 404
    assert await walk(live_client, live_tenant, device_id, start=BASE, end=BASE + DAY) == []


async def test_export_then_import_into_another_device_round_trips(
    live_client: httpx.AsyncClient, live_tenant: Tenant, live_database: Database
) -> None:
    source = await make_device(live_client, live_tenant)
    target = await make_device(live_client, live_tenant)
    readings = [Reading("t", BASE + i, Kind.NUMBER, i / 3) for i in range(50)] + [
        Reading("s", BASE, Kind.TEXT, 'a,"b"\nc'),
        Reading("j", BASE, Kind.JSON, {"k": [1]}),
    ]
    await write(live_database, live_tenant, source, readings)
    window = {"start": BASE, "end": BASE + DAY}
    exported = await live_client.get(
        f"{API}/devices/{source}/telemetry/export",
        headers=live_tenant.headers(Role.VIEWER),
        params=window,
    )
    answer = await upload(live_client, live_tenant, target, exported.content)
    assert answer.json()["stored"] == len(readings), answer.text
    assert await walk(live_client, live_tenant, target, **window) == await walk(
        live_client, live_tenant, source, **window
    )


async def test_cli_import_is_idempotent_too(
    live_client: httpx.AsyncClient,
    live_tenant: Tenant,
    live_database: Database,
    tmp_path: Path,
) -> None:
    device_id = await make_device(live_client, live_tenant)
    data = tmp_path / "history.csv"
    data.write_text(GOOD_CSV + "nope,t,1,\n")
    rows = len(GOOD_VALUES) + 1
    first = run_cli(live_database, "import", "--device", device_id, str(data))
    assert first.returncode == 0, first.stderr
    assert f"{rows} rows: {rows - 1} stored, 0 duplicates, 1 rejected" in first.stdout
    assert f"line {rows + 1}: ts must be" in first.stderr
    window: dict[str, Any] = {"start": BASE, "end": BASE + DAY}
    assert await walk(live_client, live_tenant, device_id, **window) == GOOD_VALUES
    second = run_cli(live_database, "import", "--device", device_id, str(data))
    assert f"{rows} rows: 0 stored, {rows - 1} duplicates, 1 rejected" in second.stdout
    latest = await get(live_client, live_tenant, f"/devices/{device_id}/telemetry/latest")
    assert latest["values"]["temp"]["value"] == -1000.0
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"ts,key,value\n\xff\n")
    refused = run_cli(live_database, "import", "--device", device_id, str(bad))
    assert refused.returncode == 1
    assert "UTF-8" in refused.stderr
