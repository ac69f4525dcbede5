"""Self-provisioning with a profile's key and secret, and bulk provisioning from CSV."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from fleetcore.auth.principal import Role
from tests.support.tenants import Tenant

PROVISION = "/api/v1/provision"
IMPORT = "/api/v1/devices/import"
DEVICES = "/api/v1/devices"
ME = "/api/v1/devices/me"


async def make_profile(client: httpx.AsyncClient, tenant: Tenant, **fields: Any) -> dict[str, Any]:
    """A profile with provisioning enabled (generated key and secret) unless told otherwise."""
    body = {"name": f"profile-{uuid.uuid4().hex[:6]}", "provisioning_enabled": True, **fields}
    response = await client.post(
        "/api/v1/device-profiles", json=body, headers=tenant.headers(Role.MANAGER)
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def credentials(profile: dict[str, Any], serial: str, **extra: Any) -> dict[str, Any]:
    """A provisioning request for `serial` with the profile's key and secret."""
    return {
        "provision_key": profile["provision_key"],
        "provision_secret": profile["provision_secret"],
        "serial_number": serial,
        **extra,
    }


async def devices_of(client: httpx.AsyncClient, tenant: Tenant) -> dict[str, dict[str, Any]]:
    """The tenant's live devices by serial number."""
    response = await client.get(DEVICES, params={"limit": 500}, headers=tenant.headers())
    assert response.status_code == 200, response.text
    return {d["serial_number"]: d for d in response.json()["items"]}


async def whoami(client: httpx.AsyncClient, token: str) -> httpx.Response:
    """GET /api/v1/devices/me with a device token."""
    return await client.get(ME, headers={"X-Device-Token": token})


async def test_self_provisioning(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    profile = await make_profile(client, tenant)
    response = await client.post(PROVISION, json=credentials(profile, "SELF-1", name="Kiosk"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"device_id", "access_token"}
    assert body["access_token"].startswith("fcd_")

    devices = await devices_of(client, tenant)
    assert devices["SELF-1"]["id"] == body["device_id"]
    assert devices["SELF-1"]["name"] == "Kiosk"
    assert devices["SELF-1"]["profile_id"] == profile["id"]
    assert devices["SELF-1"]["status"] == "provisioned"
    assert await devices_of(client, other_tenant) == {}
    me = await whoami(client, body["access_token"])
    assert me.status_code == 200
    assert me.json()["id"] == body["device_id"]
    assert me.json()["status"] == "active"

    audit = await client.get(
        "/api/v1/audit", params={"action": "device.provision"}, headers=tenant.headers()
    )
    [event] = audit.json()["items"]
    assert event["actor_type"] == "device"
    assert event["actor_id"] == body["device_id"]
    assert event["details"]["reprovision"] is False
    assert profile["provision_secret"] not in audit.text
    assert body["access_token"] not in audit.text

    # Without a name, the serial number names the device.
    unnamed = await client.post(PROVISION, json=credentials(profile, "SELF-2"))
    assert unnamed.status_code == 201
    assert (await devices_of(client, tenant))["SELF-2"]["name"] == "SELF-2"


async def test_wrong_key_or_secret_is_401_alike(client: httpx.AsyncClient, tenant: Tenant) -> None:
    profile = await make_profile(client, tenant)
    wrong_secret = credentials(profile, "S-1", provision_secret="fcps_guessed-but-wrong")
    wrong_key = credentials(profile, "S-1", provision_key="fcp_no-such-key")
    answers = [await client.post(PROVISION, json=body) for body in (wrong_secret, wrong_key)]
    for response in answers:
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "INVALID_PROVISION_CREDENTIALS"
    assert answers[0].json()["error"]["message"] == answers[1].json()["error"]["message"]
    assert await devices_of(client, tenant) == {}
    audit = await client.get(
        "/api/v1/audit",
        params={"action": "device.provision", "outcome": "failure"},
        headers=tenant.headers(),
    )
    assert len(audit.json()["items"]) == 1  # the key was right: the organization hears of it
    assert "guessed-but-wrong" not in audit.text


async def test_provisioning_disabled_profile_is_401(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    profile = await make_profile(client, tenant)
    off = await client.patch(
        f"/api/v1/device-profiles/{profile['id']}",
        json={"provisioning_enabled": False},
        headers=tenant.headers(),
    )
    assert off.status_code == 200
    response = await client.post(PROVISION, json=credentials(profile, "S-1"))
    assert response.status_code == 401
    assert await devices_of(client, tenant) == {}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provision_key": "k", "provision_secret": "s"}, "body.serial_number"),
        ({"provision_key": "k", "serial_number": "S"}, "body.provision_secret"),
        (
            {"provision_key": "k\x00", "provision_secret": "s", "serial_number": "S"},
            "body.provision_key",
        ),
        (
            {"provision_key": "k", "provision_secret": "s", "serial_number": "\n"},
            "body.serial_number",
        ),
    ],
)
async def test_provision_validation(
    client: httpx.AsyncClient, body: dict[str, Any], field: str
) -> None:
    response = await client.post(PROVISION, json=body)
    assert response.status_code == 422
    assert field in {e["field"] for e in response.json()["error"]["details"]["errors"]}


async def test_repeat_is_409_without_reprovisioning(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    profile = await make_profile(client, tenant)
    first = await client.post(PROVISION, json=credentials(profile, "R-1"))
    assert first.status_code == 201
    again = await client.post(PROVISION, json=credentials(profile, "R-1"))
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "DEVICE_ALREADY_PROVISIONED"
    assert (await whoami(client, first.json()["access_token"])).status_code == 200
    assert list(await devices_of(client, tenant)) == ["R-1"]


async def test_repeat_with_reprovisioning_rekeys(client: httpx.AsyncClient, tenant: Tenant) -> None:
    profile = await make_profile(client, tenant, allow_reprovision=True)
    first = await client.post(PROVISION, json=credentials(profile, "R-1"))
    assert first.status_code == 201
    again = await client.post(PROVISION, json=credentials(profile, "R-1", name="ignored"))
    assert again.status_code == 200, again.text
    assert again.json()["device_id"] == first.json()["device_id"]
    assert again.json()["access_token"] != first.json()["access_token"]
    old = await whoami(client, first.json()["access_token"])
    assert old.status_code == 401
    assert old.json()["error"]["code"] == "INVALID_DEVICE_TOKEN"
    assert (await whoami(client, again.json()["access_token"])).status_code == 200
    devices = await devices_of(client, tenant)
    assert list(devices) == ["R-1"]
    assert devices["R-1"]["name"] == "R-1"
    audit = await client.get(
        "/api/v1/audit", params={"action": "device.provision"}, headers=tenant.headers()
    )
    assert [e["details"]["reprovision"] for e in audit.json()["items"]] == [True, False]

    # Not for a device another profile owns, nor for a disabled one.
    other = await make_profile(client, tenant, allow_reprovision=True)
    stolen = await client.post(PROVISION, json=credentials(other, "R-1"))
    assert stolen.status_code == 409
    assert stolen.json()["error"]["code"] == "DEVICE_ALREADY_PROVISIONED"
    await client.patch(
        f"{DEVICES}/{devices['R-1']['id']}", json={"status": "disabled"}, headers=tenant.headers()
    )
    disabled = await client.post(PROVISION, json=credentials(profile, "R-1"))
    assert disabled.status_code == 409
    assert disabled.json()["error"]["code"] == "DEVICE_DISABLED"

    # After a delete the serial provisions a new device.
    await client.delete(f"{DEVICES}/{devices['R-1']['id']}", headers=tenant.headers())
    fresh = await client.post(PROVISION, json=credentials(profile, "R-1"))
    assert fresh.status_code == 201
    assert fresh.json()["device_id"] != first.json()["device_id"]


# -- CSV import ----------------------------------------------------------------------------


async def upload(
    client: httpx.AsyncClient,
    tenant: Tenant,
    content: bytes,
    role: Role = Role.MANAGER,
) -> httpx.Response:
    """POST the bytes as the multipart file field."""
    return await client.post(
        IMPORT, files={"file": ("devices.csv", content, "text/csv")}, headers=tenant.headers(role)
    )


async def test_import_mixed_rows(
    client: httpx.AsyncClient, tenant: Tenant, other_tenant: Tenant
) -> None:
    profile = await make_profile(client, tenant, name="Meter")
    await client.post(
        DEVICES, json={"name": "existing", "serial_number": "OLD-1"}, headers=tenant.headers()
    )
    theirs = await make_profile(client, other_tenant, name="Theirs")
    csv_text = "\r\n".join(
        [
            "name,serial_number,profile,labels,latitude,longitude",
            "Meter one,M-1,Meter,floor:1;hall,52.5,13.4",  # 2: created, profile by name
            f"Meter two,M-2,{profile['id']},,,",  # 3: created, profile by id
            "Meter dup,M-1,,,,",  # 4: repeats row 2
            "Old one,OLD-1,,,,",  # 5: taken in the organization
            ",M-5,,,,",  # 6: missing name
            "Unknown,M-6,Nope,,,",  # 7: unknown profile
            f"Foreign,M-7,{theirs['id']},,,",  # 8: another organization's profile
            "Bad numbers,M-8,,,north,13.4",  # 9: latitude not a number
            "Half,M-9,,,52.5,",  # 10: longitude missing
            "Far,M-10,,,95,200",  # 11: out of range
            "Bad label,M-11,,has space,,",  # 12: bad label
            "Extra,M-12,,,,,surplus",  # 13: too many fields
            "",  # blank lines are skipped
            'Quoted "name",M-13,,,,',  # 15: created
        ]
    ).encode()
    response = await upload(client, tenant, csv_text)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["created"] == 3
    assert result["failed"] == 10
    rows = {r["row"]: r for r in result["rows"]}
    assert [r["row"] for r in result["rows"]] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15]

    def fields(row: int) -> set[str]:
        assert rows[row]["status"] == "error"
        assert "access_token" not in rows[row]
        return {e["field"] for e in rows[row]["errors"]}

    assert fields(4) == {"serial_number"}
    assert "row 2" in rows[4]["errors"][0]["message"]
    assert fields(5) == {"serial_number"}
    assert fields(6) == {"name"}
    assert fields(7) == {"profile"}
    assert fields(8) == {"profile"}
    assert fields(9) == {"latitude"}
    assert fields(10) == {"longitude"}
    assert fields(11) == {"latitude", "longitude"}
    assert fields(12) == {"labels"}
    assert fields(13) == {"row"}

    devices = await devices_of(client, tenant)
    assert sorted(devices) == ["M-1", "M-13", "M-2", "OLD-1"]
    assert devices["M-1"]["profile_id"] == profile["id"]
    assert devices["M-1"]["labels"] == ["floor:1", "hall"]
    assert devices["M-1"]["location"] == {"latitude": 52.5, "longitude": 13.4, "altitude": None}
    assert devices["M-2"]["profile_id"] == profile["id"]
    assert devices["M-13"]["name"] == 'Quoted "name"'
    for row in (2, 3, 15):
        assert rows[row]["status"] == "created"
        assert devices[rows[row]["serial_number"]]["id"] == rows[row]["device_id"]
        me = await whoami(client, rows[row]["access_token"])
        assert me.status_code == 200
        assert me.json()["id"] == rows[row]["device_id"]

    audit = await client.get(
        "/api/v1/audit", params={"action": "device.import"}, headers=tenant.headers()
    )
    assert audit.json()["items"][0]["details"] == {"created": 3, "failed": 10}
    created_events = await client.get(
        "/api/v1/audit", params={"action": "device.create"}, headers=tenant.headers()
    )
    assert len(created_events.json()["items"]) == 4  # OLD-1 and the three imported
    assert rows[2]["access_token"] not in created_events.text


async def test_import_minimal_columns_bom_and_any_header_case(
    client: httpx.AsyncClient, tenant: Tenant
) -> None:
    content = "\ufeffName , SERIAL_NUMBER\nÜberwachung,Ü-1\nSecond,S-2\n".encode()
    response = await upload(client, tenant, content)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 2
    assert (await devices_of(client, tenant))["Ü-1"]["name"] == "Überwachung"


@pytest.mark.parametrize(
    ("content", "status", "code"),
    [
        pytest.param(
            "name,serial_number\nM\xfcller,S-1\n".encode("latin-1"),
            422,
            "CSV_NOT_UTF8",
            id="latin-1",
        ),
        pytest.param(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", 422, "CSV_NOT_UTF8", id="png"),
        pytest.param(b"name,serial_number\nA,\x00S-1\n", 422, "INVALID_CSV", id="nul-byte"),
        pytest.param(b'name,serial_number\n"unclosed,S-1\n', 422, "INVALID_CSV", id="bad-quote"),
        pytest.param(b"", 422, "CSV_EMPTY", id="empty"),
        pytest.param(b"\n\n", 422, "CSV_EMPTY", id="blank"),
        pytest.param(b"name,serial\nA,S-1\n", 422, "INVALID_CSV_HEADER", id="missing-column"),
        pytest.param(b'{"name": "A", "serial_number": "S"}', 422, "INVALID_CSV_HEADER", id="json"),
        pytest.param(
            b"name,serial_number,colour\nA,S,red\n", 422, "INVALID_CSV_HEADER", id="unknown"
        ),
        pytest.param(b"name,serial_number,name\nA,S,B\n", 422, "INVALID_CSV_HEADER", id="repeated"),
        pytest.param(
            b"name,serial_number\n" + b"a,b\n" * 10_001, 413, "TOO_MANY_ROWS", id="too-many-rows"
        ),
        pytest.param(
            b"name,serial_number\n" + b"x" * (1024 * 1024), 413, "FILE_TOO_LARGE", id="too-large"
        ),
    ],
)
async def test_import_refuses_bad_files(
    client: httpx.AsyncClient, tenant: Tenant, content: bytes, status: int, code: str
) -> None:
    response = await upload(client, tenant, content)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    assert error["message"]
    assert await devices_of(client, tenant) == {}


async def test_import_without_a_file_is_422(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for kwargs in (
        {"data": {"file": "name,serial_number\nA,S\n"}},  # a text field, not a file
        {"files": {"other": ("d.csv", b"name,serial_number\nA,S\n", "text/csv")}},
        {"json": {"file": "x"}},
    ):
        response = await client.post(IMPORT, headers=tenant.headers(), **kwargs)  # type: ignore[arg-type]
        assert response.status_code == 422, response.text
        assert response.json()["error"]["code"] == "FILE_REQUIRED"
    anonymous = await client.post(
        IMPORT, files={"file": ("d.csv", b"name,serial_number\nA,S\n", "text/csv")}
    )
    assert anonymous.status_code == 401
    assert await devices_of(client, tenant) == {}


async def test_import_of_many_rows(client: httpx.AsyncClient, tenant: Tenant) -> None:
    lines = ["name,serial_number,labels"] + [f"Device {i},BULK-{i:05d},bulk" for i in range(600)]
    response = await upload(client, tenant, "\n".join(lines).encode())
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 600
    listed = await client.get(
        DEVICES,
        params={"label": "bulk", "limit": 500, "sort": "serial_number"},
        headers=tenant.headers(),
    )
    assert len(listed.json()["items"]) == 500
    assert listed.json()["items"][0]["serial_number"] == "BULK-00000"
    # The existing serials are found in chunks: a second import refuses every row.
    again = await upload(client, tenant, "\n".join(lines).encode())
    assert again.json() == {"created": 0, "failed": 600, "rows": again.json()["rows"]}
