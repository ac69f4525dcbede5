"""Devices that send numbered readings and keep exact books: which were sent, which the
platform acknowledged (HTTP 2xx, MQTT PUBACK), and what it answered otherwise.

Reading `seq` of a device has the timestamp `ledger.base + seq` and the value `seq`, so
what storage holds can be compared reading by reading with what was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import httpx
import orjson
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.faults import KEY, FaultDevice, Storage
from tests.support.http_clients import local_client

TOPIC = "v1/devices/me/telemetry"


class Ledger:
    """Per device: the readings sent and those acknowledged."""

    def __init__(self) -> None:
        self.base = int(time.time() * 1000) - 3_600_000  # an hour ago: never in the future
        self.sent: defaultdict[uuid.UUID, set[int]] = defaultdict(set)
        self.acked: defaultdict[uuid.UUID, set[int]] = defaultdict(set)
        self._next: Counter[uuid.UUID] = Counter()

    def new(self, device: uuid.UUID, count: int) -> list[int]:
        """The next `count` readings of `device`, counted as sent."""
        first = self._next[device]
        self._next[device] += count
        seqs = list(range(first, first + count))
        self.sent[device].update(seqs)
        return seqs

    def ack(self, device: uuid.UUID, seqs: list[int]) -> None:
        """The platform acknowledged these readings."""
        self.acked[device].update(seqs)

    def payload(self, seqs: list[int]) -> bytes:
        """The telemetry body holding these readings."""
        return orjson.dumps([{"ts": self.base + s, "values": {KEY: s}} for s in seqs])

    def unacked(self, device: uuid.UUID) -> list[int]:
        """Readings sent and not acknowledged (what a device would send again)."""
        return sorted(self.sent[device] - self.acked[device])

    @property
    def acked_count(self) -> int:
        """Acknowledged readings, all devices."""
        return sum(len(s) for s in self.acked.values())

    @property
    def unacked_count(self) -> int:
        """Readings sent and not acknowledged, all devices."""
        return sum(len(self.sent[d] - self.acked[d]) for d in self.sent)


def check_storage(storage: Storage, ledger: Ledger, *, complete: bool) -> int:
    """Every acknowledged reading is stored exactly once, nothing was stored that was not
    sent, roll-ups count each stored reading once and latest is the newest; `complete`:
    every reading sent is stored. Returns the readings stored."""
    twice = {k: n for k, n in storage.rows.items() if n != 1}
    assert not twice, f"stored more than once: {list(twice.items())[:10]}"
    by_device: defaultdict[uuid.UUID, set[int]] = defaultdict(set)
    for device, ts in storage.rows:
        by_device[device].add(ts - ledger.base)
    for device, sent in ledger.sent.items():
        stored = by_device.pop(device, set())
        lost = ledger.acked[device] - stored
        assert not lost, f"{len(lost)} acknowledged readings of {device} lost: {sorted(lost)[:10]}"
        assert stored <= sent, f"stored, never sent: {sorted(stored - sent)[:10]}"
        if complete:
            missing = sent - stored
            assert not missing, (
                f"{len(missing)} readings of {device} missing: {sorted(missing)[:10]}"
            )
        assert storage.rollup_1m[device] == len(stored) == storage.rollup_1h[device], device
        if stored:
            assert storage.latest[device] == ledger.base + max(stored)
    assert not by_device, f"readings of unknown devices: {list(by_device)[:3]}"
    return len(storage.rows)


class HttpSender:
    """A device posting batches over HTTP; a batch not acknowledged (503, a broken
    connection) is sent again, after the Retry-After the platform asked for."""

    def __init__(
        self,
        device: FaultDevice,
        ledger: Ledger,
        base: str,
        *,
        batch: int = 50,
        timeout_s: float = 30.0,
    ) -> None:
        self.device, self.ledger, self.batch = device, ledger, batch
        self.http = local_client(
            base_url=base, timeout=timeout_s, headers={"X-Device-Token": device.token}
        )
        self.statuses: Counter[int] = Counter()
        self.codes: Counter[str] = Counter()  # error codes of the refusals
        self.transport_errors = 0
        self.problems: list[str] = []  # answers that break the contract

    async def run(self, stop: asyncio.Event, *, finish: bool = False) -> None:
        """Send new batches until `stop`; `finish`: then keep retrying the last one until
        it is acknowledged."""
        pending: list[int] | None = None
        while True:
            if pending is None:
                if stop.is_set():
                    return
                pending = self.ledger.new(self.device.id, self.batch)
            elif stop.is_set() and not finish:
                return
            backoff = await self.send(pending)
            if backoff is None:
                pending = None
            else:
                await asyncio.sleep(backoff)  # what a device does between retries

    async def resend(self, seqs: list[int]) -> None:
        """Send these readings again until each batch is acknowledged."""
        for start in range(0, len(seqs), self.batch):
            chunk = seqs[start : start + self.batch]
            while True:
                backoff = await self.send(chunk)
                if backoff is None:
                    break
                await asyncio.sleep(backoff)  # what a device does between retries

    async def send(self, seqs: list[int]) -> float | None:
        """One POST; None when acknowledged, else seconds to wait before retrying."""
        try:
            answer = await self.http.post(
                "/api/v1/devices/me/telemetry",
                content=self.ledger.payload(seqs),
                headers={"Content-Type": "application/json"},
            )
        except httpx.TransportError:
            self.transport_errors += 1
            return 0.1
        self.statuses[answer.status_code] += 1
        if answer.status_code == 200:
            body = answer.json()
            if body["stored"] + body["duplicates"] != len(seqs) or body["rejected"]:
                self.problems.append(f"200 without every reading: {answer.text[:300]}")
            self.ledger.ack(self.device.id, seqs)
            return None
        if answer.status_code in (503, 507):
            self._check_refusal(answer)
            return min(float(answer.headers.get("Retry-After", "1")), 1.0)
        self.problems.append(f"{answer.status_code}: {answer.text[:300]}")
        return 0.5

    def _check_refusal(self, answer: httpx.Response) -> None:
        retry_after = answer.headers.get("Retry-After", "")
        try:
            error = answer.json()["error"]
            well_formed = bool(error["code"] and error["message"] and error["request_id"])
            self.codes[str(error["code"])] += 1
        except (ValueError, KeyError, TypeError):
            well_formed = False
        if not retry_after.isdigit() or not well_formed:
            self.problems.append(
                f"{answer.status_code} Retry-After={retry_after!r}: {answer.text[:300]}"
            )

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.http.aclose()


class MqttSender:
    """A device publishing one reading per QoS 1 message with paho-mqtt (MQTT 5), up to
    `window` unacknowledged; it never reconnects by itself (a new sender resends)."""

    def __init__(self, device: FaultDevice, ledger: Ledger, port: int, *, window: int = 20) -> None:
        self.device, self.ledger, self.port, self.window = device, ledger, port, window
        self.loop = asyncio.get_running_loop()
        self.inflight: dict[int, list[int]] = {}  # message id -> readings
        self.refused: list[int] = []  # PUBACK reason codes >= 0x80
        self.connected = False
        self.disconnects = 0
        self._changed = asyncio.Event()
        self._connack: asyncio.Future[int] = self.loop.create_future()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"fault-{uuid.uuid4().hex[:12]}",
            protocol=paho.MQTTv5,
        )
        client.username_pw_set(device.token)
        client.max_inflight_messages_set(window)
        client.reconnect_delay_set(3600, 3600)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        self.client = client

    # paho calls these on its network thread; the books are kept on the event loop.
    def _on_connect(self, *args: Any) -> None:
        self.loop.call_soon_threadsafe(self._connected, args[3].value)

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason: Any, _p: Any) -> None:
        self.loop.call_soon_threadsafe(self._acked, mid, reason.value)

    def _on_disconnect(self, *_: Any) -> None:
        self.loop.call_soon_threadsafe(self._gone)

    def _connected(self, reason: int) -> None:
        self.connected = reason == 0
        if not self._connack.done():
            self._connack.set_result(reason)

    def _acked(self, mid: int, reason: int) -> None:
        seqs = self.inflight.pop(mid, None)
        if seqs is not None:
            if reason >= 0x80:
                self.refused.append(reason)
            else:
                self.ledger.ack(self.device.id, seqs)
        self._changed.set()

    def _gone(self) -> None:
        self.connected = False
        self.disconnects += 1
        self._changed.set()

    async def connect(self) -> None:
        """Connect (CONNACK success required) and start paho's network thread."""
        await asyncio.to_thread(self.client.connect, "127.0.0.1", self.port, 30)
        self.client.loop_start()
        reason = await asyncio.wait_for(self._connack, 10)
        assert reason == 0, f"CONNACK {reason:#x}"

    def _publish(self, seqs: list[int]) -> None:
        info = self.client.publish(TOPIC, self.ledger.payload(seqs), qos=1)
        self.inflight[info.mid] = seqs

    def publish_new(self) -> None:
        """One new reading now, whatever the window."""
        self._publish(self.ledger.new(self.device.id, 1))

    async def _room(self) -> None:
        self._changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), 0.1)

    async def run(self, stop: asyncio.Event) -> None:
        """Publish new readings until `stop` or until the connection is lost."""
        while self.connected and not stop.is_set():
            if len(self.inflight) >= self.window:
                await self._room()
                continue
            self._publish(self.ledger.new(self.device.id, 1))

    async def resend(self, seqs: list[int], *, within: float = 60.0) -> None:
        """Publish these readings again and wait for every PUBACK."""
        deadline = self.loop.time() + within
        queue = list(seqs)
        while queue or self.inflight:
            assert self.connected, "connection lost while resending"
            assert self.loop.time() < deadline, f"{len(self.inflight)} never acknowledged"
            if queue and len(self.inflight) < self.window:
                self._publish([queue.pop()])
                continue
            await self._room()

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()
