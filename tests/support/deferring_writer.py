"""A busy ingest worker that dies: its writer logs numbers, defers their merge into the
roll-ups and latest values, and the process is then killed (SIGKILL) by the test.

Run by tests/test_writer_recovery.py in a process of its own, as an ingest worker is:

    python deferring_writer.py DATABASE_URL ORGANIZATION_ID DEVICE_ID...

The first batch is merged before its commit (the queue was empty); the others are written
deferred, with late readings (before a merged bucket's first one, between stored ones) and
readings already stored or twice in a batch. Prints "deferred" once they are committed,
then waits to be killed.
"""

from __future__ import annotations

import asyncio
import math
import sys
import uuid

from fleetcore.db import create_engine
from fleetcore.telemetry import writer
from fleetcore.telemetry.writer import DeviceReadings, TelemetryWriter
from fleetcore_protocol.telemetry import Kind, Reading

HOUR = 3_600_000
BASE_TS = 1_789_999_200_000 - 90_000  # a minute and a half before an hour boundary
KEYS = ("a", "b")


def value(device: int, key: str, ts: int) -> float:
    """The same value whenever a reading is sent (whole numbers: sums are exact)."""
    return float((device * 37 + ord(key) * 11 + ts // 1000 * 7) % 500)


def batch(devices: list[uuid.UUID], org: uuid.UUID, seconds: list[int]) -> list[DeviceReadings]:
    """Every device's KEYS at BASE_TS + each of `seconds` (in that order)."""
    return [
        DeviceReadings(
            device,
            org,
            [
                Reading(k, BASE_TS + s * 1000, Kind.NUMBER, value(d, k, BASE_TS + s * 1000))
                for s in seconds
                for k in KEYS
            ],
        )
        for d, device in enumerate(devices)
    ]


BATCHES = [
    list(range(10, 50, 2)),  # merged: the first minute's buckets, from 10 s
    [51, 5, 11, 10, 60, 20, 120],  # late (before 10 s, between), stored (10, 20), new minutes
    [89, 90, 91, 150, 3, 91, 30],  # across the hour, 91 twice, 30 stored, 3 late again
]


async def main() -> None:
    url, org, devices = sys.argv[1], uuid.UUID(sys.argv[2]), [uuid.UUID(d) for d in sys.argv[3:]]
    writer.DEFER_SECONDS = math.inf  # its deferred merge never comes due: it dies first
    telemetry = TelemetryWriter(create_engine(url, pool_size=2))
    first, *rest = BATCHES
    await telemetry.write(batch(devices, org, first))
    for seconds in rest:
        await telemetry.write(batch(devices, org, seconds), defer_rollups=True)
    print("deferred", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until killed


if __name__ == "__main__":
    asyncio.run(main())
