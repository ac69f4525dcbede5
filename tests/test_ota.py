"""OTA updates end to end on both databases: packages (checksum, duplicates, signatures),
rollouts (stages, the failure limit, pause/resume/abort/rollback), and ThingsBoard-style
devices downloading over MQTT chunks (paho, ThingsBoard's documented topics) and HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.db import Database
from tests.conftest import client_for, running_app
from tests.support.devices import new_device, port_of
from tests.support.paho_device import PahoDevice
from tests.support.postgres import free_port
from tests.support.tenants import Tenant, make_tenant
from tests.support.wait import wait_until


@pytest.fixture
async def ota_app(live_database: Database, tmp_path: Path) -> AsyncIterator[FastAPI]:
    """The app with its broker and a fast rollout job."""
    async with running_app(
        live_database, tmp_path, mqtt_port=free_port(), ota_job_interval_s=0.2
    ) as application:
        yield application


@pytest.fixture
async def http(ota_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(ota_app) as client:
        yield client


@pytest.fixture
async def org(http: httpx.AsyncClient, live_database: Database) -> Tenant:
    return await make_tenant(http, live_database)


async def upload(
    http: httpx.AsyncClient,
    org: Tenant,
    data: bytes,
    *,
    title: str = "sensor-fw",
    version: str = "1.0",
    kind: str = "firmware",
    signature: str | None = None,
) -> httpx.Response:
    fields = {"title": title, "version": version, "kind": kind}
    if signature is not None:
        fields["signature"] = signature
    return await http.post(
        "/api/v1/ota/packages",
        headers=org.headers(Role.MANAGER),
        data=fields,
        files={"file": ("fw.bin", data, "application/octet-stream")},
    )


async def rollout(http: httpx.AsyncClient, org: Tenant, **body: Any) -> dict[str, Any]:
    response = await http.post("/api/v1/ota/rollouts", headers=org.headers(Role.MANAGER), json=body)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


async def get_rollout(http: httpx.AsyncClient, org: Tenant, rollout_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/ota/rollouts/{rollout_id}", headers=org.headers())
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


async def shared(http: httpx.AsyncClient, org: Tenant, device_id: str) -> dict[str, Any]:
    response = await http.get(f"/api/v1/devices/{device_id}/attributes", headers=org.headers())
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["shared"]
    return result


async def report(http: httpx.AsyncClient, token: str, **values: Any) -> None:
    response = await http.post(
        "/api/v1/devices/me/attributes", headers={"X-Device-Token": token}, json=values
    )
    assert response.status_code == 200, response.text


# -- packages --------------------------------------------------------------------------


async def test_upload_checksum_duplicate_download_and_signatures(
    http: httpx.AsyncClient, org: Tenant
) -> None:
    data = os.urandom(5 * 1024 * 1024 + 123)  # over one stored part
    first = await upload(http, org, data)
    assert first.status_code == 201, first.text
    package = first.json()
    assert package["checksum"] == hashlib.sha256(data).hexdigest()
    assert package["checksum_algorithm"] == "SHA256"
    assert package["size"] == len(data)
    again = await upload(http, org, b"other bytes")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "OTA_PACKAGE_EXISTS"
    url = f"/api/v1/ota/packages/{package['id']}/download"
    whole = await http.get(url, headers=org.headers(Role.VIEWER))
    assert whole.status_code == 200
    assert whole.content == data
    ranged = await http.get(url, headers={**org.headers(), "Range": "bytes=4194300-4194310"})
    assert ranged.status_code == 206
    assert ranged.content == data[4194300:4194311]
    bad = await http.post(
        "/api/v1/ota/packages",
        headers=org.headers(Role.MANAGER),
        data={"title": "x", "version": "1", "kind": "bootloader"},
        files={"file": ("fw.bin", b"x")},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["details"]["field"] == "kind"

    # Signing: once the organization has a key, uploads must carry a valid signature.
    private = Ed25519PrivateKey.generate()
    pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    key = await http.post(
        "/api/v1/ota/keys", headers=org.headers(Role.ADMIN), json={"name": "ci", "public_key": pem}
    )
    assert key.status_code == 201, key.text
    signed_data = b"signed firmware " * 1000
    unsigned = await upload(http, org, signed_data, version="2.0")
    assert unsigned.status_code == 422
    assert unsigned.json()["error"]["code"] == "OTA_SIGNATURE_REQUIRED"
    signature = base64.b64encode(private.sign(signed_data)).decode()
    tampered = await upload(http, org, signed_data[:-1] + b"X", version="2.0", signature=signature)
    assert tampered.status_code == 422
    assert tampered.json()["error"]["code"] == "OTA_SIGNATURE_MISMATCH"
    good = await upload(http, org, signed_data, version="2.0", signature=signature)
    assert good.status_code == 201, good.text
    assert good.json()["signature"] == signature
    assert good.json()["key_id"] == key.json()["id"]
    listed = await http.get("/api/v1/ota/packages", headers=org.headers(Role.VIEWER))
    assert [p["version"] for p in listed.json()["items"]] == [
        "2.0",
        "1.0",
    ]  # refusals stored nothing
    # The device sees the signature in its desired state.
    device_id, _ = await new_device(http, org)
    await rollout(http, org, package_id=good.json()["id"], target={"device_ids": [device_id]})
    desired = await shared(http, org, device_id)
    assert desired["fw_signature"] == signature
    assert desired["fw_signature_alg"] == "ed25519"
    assert desired["fw_checksum"] == hashlib.sha256(signed_data).hexdigest()


async def test_an_upload_that_is_not_multipart_is_422_and_stores_nothing(
    http: httpx.AsyncClient, org: Tenant
) -> None:
    url = "/api/v1/ota/packages"
    for headers in ({}, {"Content-Type": "application/octet-stream"}):
        sent = await http.post(url, headers={**org.headers(), **headers}, content=b"firmware")
        assert sent.status_code == 422, sent.text
        assert sent.json()["error"]["code"] == "MULTIPART_REQUIRED"
    no_boundary = await http.post(
        url, headers={**org.headers(), "Content-Type": "multipart/form-data"}, content=b"x"
    )
    assert no_boundary.status_code == 422, no_boundary.text
    assert no_boundary.json()["error"]["code"] == "MULTIPART_INVALID"
    listed = await http.get(url, headers=org.headers())
    assert listed.json()["items"] == []


async def test_delete_refused_while_a_rollout_uses_it(http: httpx.AsyncClient, org: Tenant) -> None:
    package = (await upload(http, org, b"firmware")).json()
    device_id, _ = await new_device(http, org)
    started = await rollout(http, org, package_id=package["id"], target={"device_ids": [device_id]})
    url = f"/api/v1/ota/packages/{package['id']}"
    refused = await http.delete(url, headers=org.headers(Role.MANAGER))
    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "OTA_PACKAGE_IN_USE"
    aborted = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/abort", headers=org.headers(Role.MANAGER)
    )
    assert aborted.status_code == 200
    assert aborted.json()["status"] == "aborted"
    assert "fw_title" not in await shared(http, org, device_id)  # the assignment was undone
    assert (await http.delete(url, headers=org.headers(Role.MANAGER))).status_code == 204
    assert (await http.get(url, headers=org.headers())).status_code == 404


# -- downloads -------------------------------------------------------------------------


async def test_thingsboard_device_updates_over_mqtt_chunks(
    ota_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    data = os.urandom(200_000)
    package = (await upload(http, org, data, title="tb-fw", version="3.1")).json()
    device_id, token = await new_device(http, org)
    device = PahoDevice(f"tb-{device_id[:8]}")
    await device.connect(port_of(ota_app), username=token)
    try:
        # ThingsBoard's documented OTA subscriptions.
        granted = await device.subscribe(
            "v1/devices/me/attributes", "v2/fw/response/+/chunk/+", "v2/fw/error"
        )
        assert all(code < 0x80 for code in granted), granted
        started = await rollout(
            http, org, package_id=package["id"], target={"device_ids": [device_id]}
        )
        update = orjson.loads((await device.next("message")).data["payload"])
        assert update["fw_title"] == "tb-fw"
        assert update["fw_version"] == "3.1"
        assert update["fw_size"] == len(data)
        assert update["fw_checksum_algorithm"] == "SHA256"
        info = {"current_fw_title": "tb-fw", "current_fw_version": "3.0"}
        await device.publish(
            "v1/devices/me/attributes", orjson.dumps({**info, "fw_state": "DOWNLOADING"})
        )
        chunk_size, received, chunk = 65536, bytearray(), 0
        while True:
            await device.publish(f"v2/fw/request/7/chunk/{chunk}", str(chunk_size).encode())
            message = await device.next("message")
            assert message.data["topic"] == f"v2/fw/response/7/chunk/{chunk}"
            received += message.data["payload"]
            if len(message.data["payload"]) < chunk_size:
                break
            chunk += 1
        assert hashlib.sha256(received).hexdigest() == update["fw_checksum"]
        for state in ("DOWNLOADED", "VERIFIED", "UPDATING"):
            await device.publish(
                "v1/devices/me/attributes", orjson.dumps({**info, "fw_state": state})
            )
        updated = {"current_fw_title": "tb-fw", "current_fw_version": "3.1", "fw_state": "UPDATED"}
        await device.publish("v1/devices/me/attributes", orjson.dumps(updated))

        async def completed() -> bool:
            body = await get_rollout(http, org, started["id"])
            return body["status"] == "completed" and body["counts"]["updated"] == 1

        await wait_until(completed, within=15)
        # Refused requests are answered as ThingsBoard's transport answers them: the status on
        # v2/fw/error (whatever the kind), so the device need not wait for its own timeout;
        # a chunk too large for MQTT is never answered cut short. Each leaves a dead letter.
        await device.publish("v2/fw/request/8/chunk/0", b"1048576")
        refused = await device.next("message")
        assert (refused.data["topic"], refused.data["payload"]) == (
            "v2/fw/error",
            b"PAYLOAD_TOO_LARGE",
        )
        await device.publish("v2/sw/request/9/chunk/0", b"1024")  # no software assigned
        refused = await device.next("message")
        assert (refused.data["topic"], refused.data["payload"]) == ("v2/fw/error", b"NOT_FOUND")

        async def dead_lettered() -> bool:
            body = (await http.get("/api/v1/dead-letters", headers=org.headers())).json()
            reasons = {item["reason"] for item in body["items"]}
            return {"chunk_too_large", "ota_not_assigned"} <= reasons

        await wait_until(dead_lettered, within=10)
    finally:
        device.stop()


async def test_http_chunks_ranges_and_only_the_assigned_device(
    http: httpx.AsyncClient, org: Tenant, live_database: Database
) -> None:
    data = os.urandom(4 * 1024 * 1024 + 5000)  # chunks across the store's part boundary
    package = (await upload(http, org, data, title="http-fw", version="1.2")).json()
    device_id, token = await new_device(http, org)
    _, stranger = await new_device(http, org)
    await rollout(http, org, package_id=package["id"], target={"device_ids": [device_id]})
    desired = await http.get("/api/v1/devices/me/attributes", headers={"X-Device-Token": token})
    assert desired.json()["shared"]["fw_checksum"] == package["checksum"]
    received, chunk, size = bytearray(), 0, 1_000_000
    while True:
        part = await http.get(
            f"/api/v1/{token}/firmware",
            params={"title": "http-fw", "version": "1.2", "chunk": chunk, "size": size},
        )
        assert part.status_code == 200, part.text
        if not part.content:
            break
        received += part.content
        chunk += 1
    assert hashlib.sha256(received).hexdigest() == package["checksum"]
    me = {"X-Device-Token": token}
    ranged = await http.get(
        "/api/v1/devices/me/ota/firmware", headers={**me, "Range": "bytes=4194000-4194999"}
    )
    assert ranged.status_code == 206
    assert ranged.content == data[4194000:4195000]
    whole = await http.get("/api/v1/devices/me/ota/firmware", headers=me)
    assert whole.content == data
    # Not assigned: 404 on every path, as for a package that does not exist.
    for url, headers in (
        (f"/api/v1/{stranger}/firmware?title=http-fw&version=1.2", {}),
        ("/api/v1/devices/me/ota/firmware", {"X-Device-Token": stranger}),
        (f"/api/v1/{token}/firmware?title=http-fw&version=9.9", {}),
        (f"/api/v1/{token}/software", {}),
    ):
        refused = await http.get(url, headers=headers)
        assert refused.status_code == 404, (url, refused.text)
        assert refused.json()["error"]["code"] == "OTA_PACKAGE_NOT_FOUND"
    # Another organization's device cannot reach it either.
    other = await make_tenant(http, live_database)
    _, foreign = await new_device(http, other)
    assert (
        await http.get(f"/api/v1/{foreign}/firmware?title=http-fw&version=1.2")
    ).status_code == 404
    assert (
        await http.get(f"/api/v1/ota/packages/{package['id']}", headers=other.headers())
    ).status_code == 404


# -- rollouts --------------------------------------------------------------------------


async def test_staged_rollout_advances_pauses_on_failures_resumes_and_aborts(
    http: httpx.AsyncClient, org: Tenant
) -> None:
    package = (await upload(http, org, b"staged firmware", version="5.0")).json()
    devices = sorted([await new_device(http, org) for _ in range(4)])
    tokens = dict(devices)
    started = await rollout(
        http,
        org,
        package_id=package["id"],
        target={"device_ids": list(tokens)},
        strategy={"type": "staged", "stages": [1], "unit": "devices", "pause_s": 0},
        max_failure_rate=0.5,
    )
    assert [s["devices"] for s in started["stages"]] == [1, 1, 1, 1]
    assert started["counts"]["queued"] == 1
    assert started["counts"]["pending"] == 3

    async def rows() -> dict[str, dict[str, Any]]:
        page = await http.get(
            f"/api/v1/ota/rollouts/{started['id']}/devices", headers=org.headers()
        )
        return {row["device_id"]: row for row in page.json()["items"]}

    def in_stage(table: dict[str, dict[str, Any]], stage: int) -> str:
        return next(d for d, row in table.items() if row["stage"] == stage)

    first = in_stage(await rows(), 0)
    assert (await shared(http, org, first))["fw_version"] == "5.0"
    await report(http, tokens[first], fw_state="UPDATED", current_fw_version="5.0")

    async def at_stage(stage: int, status: str = "active") -> bool:
        body = await get_rollout(http, org, started["id"])
        return body["current_stage"] == stage and body["status"] == status

    await wait_until(lambda: at_stage(1), within=15)
    second = in_stage(await rows(), 1)
    await report(http, tokens[second], fw_state="FAILED", fw_error="flash write error")
    await wait_until(lambda: at_stage(1, "paused"), within=15)
    paused = await get_rollout(http, org, started["id"])
    assert "failure rate" in paused["paused_reason"]
    assert paused["counts"]["failed"] == 1
    assert (await rows())[second]["error"] == "flash write error"
    assert in_stage(await rows(), 2)
    assert (await rows())[in_stage(await rows(), 2)]["state"] == ("pending")
    # Resume: the failure is acknowledged, the next stage starts.
    resumed = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/resume", headers=org.headers(Role.OPERATOR)
    )
    assert resumed.status_code == 200, resumed.text
    await wait_until(lambda: at_stage(2), within=15)
    third = in_stage(await rows(), 2)
    assert (await rows())[third]["state"] == "queued"
    again = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/resume", headers=org.headers(Role.OPERATOR)
    )
    assert again.status_code == 409
    viewer = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/pause", headers=org.headers(Role.VIEWER)
    )
    assert viewer.status_code == 403
    paused_by_hand = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/pause", headers=org.headers(Role.OPERATOR)
    )
    assert paused_by_hand.json()["status"] == "paused"
    aborted = await http.post(
        f"/api/v1/ota/rollouts/{started['id']}/abort", headers=org.headers(Role.MANAGER)
    )
    assert aborted.status_code == 200
    table = await rows()
    assert table[third]["state"] == "cancelled"
    assert "fw_version" not in await shared(http, org, third)
    assert table[in_stage(table, 3)]["state"] == "cancelled"
    assert table[first]["state"] == "updated"  # an updated device stays updated


async def test_rollback_assigns_the_previous_version(http: httpx.AsyncClient, org: Tenant) -> None:
    old = (await upload(http, org, b"old firmware", version="1.0")).json()
    new = (await upload(http, org, b"new firmware", version="2.0")).json()
    device_id, token = await new_device(http, org)
    first = await rollout(http, org, package_id=old["id"], target={"device_ids": [device_id]})
    await report(
        http, token, fw_state="UPDATED", current_fw_title="sensor-fw", current_fw_version="1.0"
    )

    async def status(rollout_id: str, wanted: str) -> bool:
        return (await get_rollout(http, org, rollout_id))["status"] == wanted

    await wait_until(lambda: status(first["id"], "completed"), within=15)
    second = await rollout(http, org, package_id=new["id"], target={"device_ids": [device_id]})
    assert (await shared(http, org, device_id))["fw_version"] == "2.0"
    await report(http, token, fw_state="FAILED", fw_error="boot loop")
    back = await http.post(
        f"/api/v1/ota/rollouts/{second['id']}/rollback", headers=org.headers(Role.MANAGER)
    )
    assert back.status_code == 200, back.text
    assert back.json()["status"] == "rolled_back"
    assert back.json()["counts"]["rolled_back"] == 1
    desired = await shared(http, org, device_id)
    assert desired["fw_version"] == "1.0"
    assert desired["fw_checksum"] == old["checksum"]
    # The device may download the version it is assigned again, not the rolled-back one.
    assert (
        await http.get(f"/api/v1/{token}/firmware?title=sensor-fw&version=2.0")
    ).status_code == 404
    again = await http.get(f"/api/v1/{token}/firmware?title=sensor-fw&version=1.0")
    assert again.content == b"old firmware"
