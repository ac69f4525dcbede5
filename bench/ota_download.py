"""OTA package downloads: MB/s of a 20 MB package in chunks, over HTTP and over MQTT.

`fleetcore serve` (SQLite, the embedded broker) in its own process; a firmware package of
PACKAGE_MB random bytes is uploaded and rolled out to one device, which then downloads it
the way a device does, one chunk after the other: over HTTP from
/api/v1/devices/me/ota/firmware?chunk=N&size=S (one keep-alive connection), and over MQTT as
a ThingsBoard device (paho: the chunk size on v2/fw/request/{id}/chunk/{n}, the bytes back
on v2/fw/response/{id}/chunk/{n}; 64 KiB, the most the platform answers over MQTT). Every
download is checked against the package's SHA-256.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import queue
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion
from tests.support.agent_rig import Platform

PACKAGE_MB = 20
HTTP_CHUNKS = (64 * 1024, 1024 * 1024)
MQTT_CHUNK = 64 * 1024
MB = 1024 * 1024


async def _setup(platform: Platform, data: bytes) -> tuple[str, str]:
    """Upload the package and roll it out to a new device: (device id, token)."""
    device_id, token = await platform.new_device()
    headers = await platform.admin_headers()
    async with httpx.AsyncClient(base_url=platform.base, headers=headers, timeout=120) as http:
        package = await http.post(
            "/api/v1/ota/packages",
            data={"title": "bench-fw", "version": "1.0", "kind": "firmware"},
            files={"file": ("fw.bin", data, "application/octet-stream")},
        )
        assert package.status_code == 201, package.text
        rollout = await http.post(
            "/api/v1/ota/rollouts",
            json={"package_id": package.json()["id"], "target": {"device_ids": [device_id]}},
        )
        assert rollout.status_code == 201, rollout.text
    return device_id, token


def _http(base: str, token: str, size: int, checksum: str) -> dict[str, Any]:
    received = hashlib.sha256()
    total, chunk = 0, 0
    with httpx.Client(base_url=base, headers={"X-Device-Token": token}, timeout=60) as http:
        started = time.perf_counter()
        while True:
            params: dict[str, str | int] = {
                "title": "bench-fw",
                "version": "1.0",
                "chunk": chunk,
                "size": size,
            }
            body = http.get("/api/v1/devices/me/ota/firmware", params=params).content
            received.update(body)
            total += len(body)
            chunk += 1
            if len(body) < size:
                break
        seconds = time.perf_counter() - started
    assert received.hexdigest() == checksum
    return {
        "chunk_bytes": size,
        "chunks": chunk,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / MB / seconds, 2),
    }


def _mqtt(port: int, token: str, checksum: str) -> dict[str, Any]:
    messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
    connected: queue.Queue[int] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{os.getpid()}")
    client.username_pw_set(token)
    client.on_connect = lambda _c, _u, _f, reason, _p: connected.put(reason.value)
    client.on_message = lambda _c, _u, message: messages.put(message)
    client.connect("127.0.0.1", port, 60)
    client.loop_start()
    try:
        assert connected.get(timeout=10) == 0
        client.subscribe("v2/fw/response/+/chunk/+", qos=1)
        time.sleep(0.2)  # the SUBACK; nothing is published before the first request
        received = hashlib.sha256()
        total, chunk = 0, 0
        started = time.perf_counter()
        while True:
            client.publish(f"v2/fw/request/1/chunk/{chunk}", str(MQTT_CHUNK).encode(), qos=1)
            message = messages.get(timeout=30)
            assert message.topic == f"v2/fw/response/1/chunk/{chunk}", message.topic
            received.update(message.payload)
            total += len(message.payload)
            chunk += 1
            if len(message.payload) < MQTT_CHUNK:
                break
        seconds = time.perf_counter() - started
    finally:
        client.disconnect()
        client.loop_stop()
    assert received.hexdigest() == checksum
    return {
        "chunk_bytes": MQTT_CHUNK,
        "chunks": chunk,
        "seconds": round(seconds, 3),
        "mb_per_s": round(total / MB / seconds, 2),
    }


def run() -> dict[str, Any]:
    """Both download paths on one served platform."""
    data = os.urandom(PACKAGE_MB * MB)
    checksum = hashlib.sha256(data).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        platform = Platform(Path(tmp), FLEETCORE_LOG_LEVEL="warning")

        async def start() -> tuple[str, str]:
            await platform.prepare()
            await platform.start()
            return await _setup(platform, data)

        try:
            _, token = asyncio.run(start())
            http = [_http(platform.base, token, size, checksum) for size in HTTP_CHUNKS]
            mqtt = _mqtt(platform.mqtt_port, token, checksum)
        finally:
            platform.stop()
    return {
        "name": "ota_download",
        "package_mb": PACKAGE_MB,
        "http": http,
        "mqtt": mqtt,
        "note": (
            "fleetcore serve on SQLite with the embedded broker, one device downloading one "
            "chunk at a time (request, answer, next); client and server share the 2 cores"
        ),
    }
