"""MQTT chunk requests remember their package per (device, request id) (ota/chunk_cache.py):
later chunks skip the look-up, and a changed assignment, a paused or aborted rollout or a
deleted package is seen at the next chunk; the cache is bounded in size and time."""

from __future__ import annotations

import os
import uuid
from typing import Any

import httpx
from fastapi import FastAPI

from fleetcore.auth.principal import Role
from fleetcore.ota.chunk_cache import ChunkCache, Resolved, assignments_changed
from tests.support.devices import new_device, port_of
from tests.support.paho_device import PahoDevice
from tests.support.tenants import Tenant
from tests.support.wait import wait_until

CHUNK = 65536
PACKAGE = Resolved("ota/x", 1024, 4096)


# -- the cache on its own ------------------------------------------------------------------


class Clock:
    """A clock the test moves (the cache's TTL is read from it)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_and_the_least_recently_used_goes_first() -> None:
    clock = Clock()
    cache = ChunkCache(max_entries=2, ttl_s=5.0, clock=clock)
    device = uuid.uuid4()
    a, b, c = ((device, "firmware", request) for request in "abc")
    cache.put(a, PACKAGE, generation=cache.generation)
    cache.put(b, PACKAGE, generation=cache.generation)
    assert cache.get(a) == PACKAGE  # a is now the most recently used
    cache.put(c, PACKAGE, generation=cache.generation)
    assert len(cache) == 2
    assert cache.get(b) is None  # b went
    assert cache.get(a) == PACKAGE
    clock.now += 5.0
    assert cache.get(a) is None  # expired
    assert cache.get(c) is None
    assert len(cache) == 0
    assert cache.hits == 2


def test_invalidations_drop_entries_and_stale_look_ups() -> None:
    cache, other = ChunkCache(), ChunkCache()
    one, two = uuid.uuid4(), uuid.uuid4()
    for target in (cache, other):
        target.put((one, "firmware", "1"), PACKAGE, generation=target.generation)
        target.put((two, "firmware", "1"), PACKAGE, generation=target.generation)
    began = cache.generation  # a look-up in flight while the device's assignment changes
    cache.forget_device(one)
    assert cache.get((one, "firmware", "1")) is None
    assert cache.get((two, "firmware", "1")) == PACKAGE
    cache.put((one, "firmware", "1"), PACKAGE, generation=began)
    assert cache.get((one, "firmware", "1")) is None  # the stale answer was not kept
    assignments_changed()  # a rollout moved: every cache of the process forgets all
    assert len(cache) == 0
    assert len(other) == 0


# -- end to end: a ThingsBoard device downloading over MQTT ---------------------------------


async def _package(http: httpx.AsyncClient, org: Tenant, data: bytes, version: str) -> str:
    uploaded = await http.post(
        "/api/v1/ota/packages",
        headers=org.headers(Role.MANAGER),
        data={"title": "cached-fw", "version": version, "kind": "firmware"},
        files={"file": ("fw.bin", data, "application/octet-stream")},
    )
    assert uploaded.status_code == 201, uploaded.text
    package_id: str = uploaded.json()["id"]
    return package_id


async def _rolled_out(http: httpx.AsyncClient, org: Tenant, package_id: str, device_id: str) -> str:
    started = await http.post(
        "/api/v1/ota/rollouts",
        headers=org.headers(Role.MANAGER),
        json={"package_id": package_id, "target": {"device_ids": [device_id]}},
    )
    assert started.status_code == 201, started.text

    async def assigned() -> bool:
        answer = await http.get(f"/api/v1/devices/{device_id}/attributes", headers=org.headers())
        return bool(answer.json()["shared"].get("fw_title") == "cached-fw")

    await wait_until(assigned)
    rollout_id: str = started.json()["id"]
    return rollout_id


async def _chunk(device: PahoDevice, request: str, chunk: int) -> tuple[str, bytes]:
    await device.publish(f"v2/fw/request/{request}/chunk/{chunk}", str(CHUNK).encode())
    message = await device.next("message")
    return message.data["topic"], message.data["payload"]


async def _connected(app: FastAPI, token: str) -> PahoDevice:
    device = PahoDevice(f"cache-{uuid.uuid4().hex[:8]}")
    await device.connect(port_of(app), username=token)
    granted = await device.subscribe("v2/fw/response/+/chunk/+", "v2/fw/error")
    assert all(code < 0x80 for code in granted), granted
    return device


async def _dead_letters(http: httpx.AsyncClient, org: Tenant) -> list[dict[str, Any]]:
    body = (await http.get("/api/v1/dead-letters", headers=org.headers())).json()
    items: list[dict[str, Any]] = body["items"]
    return items


async def test_a_rollout_aborted_mid_download_refuses_the_next_chunk(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    data = os.urandom(4 * CHUNK + 1000)
    device_id, token = await new_device(http, org)
    rollout_id = await _rolled_out(http, org, await _package(http, org, data, "1.0"), device_id)
    cache: ChunkCache = mqtt_app.state.device_messages.ota_chunks.cache
    device = await _connected(mqtt_app, token)
    try:
        hits = cache.hits
        for chunk in (0, 1):
            assert await _chunk(device, "5", chunk) == (
                f"v2/fw/response/5/chunk/{chunk}",
                data[chunk * CHUNK : (chunk + 1) * CHUNK],
            )
        assert cache.hits == hits + 1  # the second chunk was answered without a look-up
        # Paused: devices already assigned go on (the next chunk looks the assignment up).
        paused = await http.post(
            f"/api/v1/ota/rollouts/{rollout_id}/pause", headers=org.headers(Role.OPERATOR)
        )
        assert paused.status_code == 200, paused.text
        assert await _chunk(device, "5", 2) == (
            "v2/fw/response/5/chunk/2",
            data[2 * CHUNK : 3 * CHUNK],
        )
        assert cache.hits == hits + 1
        aborted = await http.post(
            f"/api/v1/ota/rollouts/{rollout_id}/abort", headers=org.headers(Role.MANAGER)
        )
        assert aborted.status_code == 200, aborted.text
        # The same request's next chunk is refused as before the cache, on v2/fw/error.
        assert await _chunk(device, "5", 3) == ("v2/fw/error", b"NOT_FOUND")

        async def dead_lettered() -> bool:
            reasons = [item["reason"] for item in await _dead_letters(http, org)]
            return "ota_not_assigned" in reasons

        await wait_until(dead_lettered, within=10)
    finally:
        device.stop()


async def test_an_assignment_changed_by_hand_is_seen_at_the_next_chunk(
    mqtt_app: FastAPI, http: httpx.AsyncClient, org: Tenant
) -> None:
    first, second = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    device_id, token = await new_device(http, org)
    await _rolled_out(http, org, await _package(http, org, first, "1.0"), device_id)
    await _package(http, org, second, "2.0")
    device = await _connected(mqtt_app, token)
    try:
        assert await _chunk(device, "9", 0) == ("v2/fw/response/9/chunk/0", first[:CHUNK])
        assert await _chunk(device, "9", 1) == (
            "v2/fw/response/9/chunk/1",
            first[CHUNK : 2 * CHUNK],
        )
        # No rollout moves: only the shared attributes change (what an operator may do).
        changed = await http.put(
            f"/api/v1/devices/{device_id}/attributes/shared",
            headers=org.headers(Role.MANAGER),
            json={"fw_version": "2.0"},
        )
        assert changed.status_code in (200, 204), changed.text
        assert await _chunk(device, "9", 2) == ("v2/fw/response/9/chunk/2", second[2 * CHUNK :])
        removed = await http.delete(
            f"/api/v1/devices/{device_id}/attributes/shared/fw_title",
            headers=org.headers(Role.MANAGER),
        )
        assert removed.status_code == 204, removed.text
        assert await _chunk(device, "9", 2) == ("v2/fw/error", b"NOT_FOUND")
    finally:
        device.stop()
